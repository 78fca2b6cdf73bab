/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_CODEC_H_INCLUDED_
#define _CTLD_CODEC_H_INCLUDED_


#include <stddef.h>

#include <grpc/grpc.h>
#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>


#define CTLD_MAX_MESSAGE      (4 * 1024 * 1024)


/* the only code that turns byte buffers into protobuf-c and back */
ProtobufCMessage *ctld_codec_unpack(const ProtobufCMessageDescriptor *d,
    grpc_byte_buffer *bb, char *err, size_t errlen);
grpc_slice ctld_codec_pack_slice(const ProtobufCMessage *m);
grpc_byte_buffer *ctld_codec_pack(const ProtobufCMessage *m);


#endif /* _CTLD_CODEC_H_INCLUDED_ */
