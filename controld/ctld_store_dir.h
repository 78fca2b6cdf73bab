/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_STORE_DIR_H_INCLUDED_
#define _CTLD_STORE_DIR_H_INCLUDED_


#include "ctld_store.h"


/* versions as files of a data directory (--data-dir) */
extern const ctld_store_backend_t  ctld_store_dir;


#endif /* _CTLD_STORE_DIR_H_INCLUDED_ */
