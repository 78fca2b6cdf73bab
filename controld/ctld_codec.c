/*
 * Copyright (C) The relay authors
 */


/*
 * The only code that turns grpc_byte_buffer into protobuf-c messages and
 * back.  Buffers may be multi-slice or compressed, so they are always read
 * through a byte buffer reader; input is capped at CTLD_MAX_MESSAGE and
 * checked with protobuf_c_message_check() before anyone looks at it.
 */


#include <stdio.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>

#include "ctld_codec.h"


ProtobufCMessage *
ctld_codec_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb,
    char *err, size_t errlen)
{
    size_t                   len;
    grpc_slice               s;
    ProtobufCMessage        *m;
    grpc_byte_buffer_reader  r;

    if (bb == NULL) {
        snprintf(err, errlen, "no message");
        return NULL;
    }

    if (grpc_byte_buffer_length(bb) > CTLD_MAX_MESSAGE) {
        snprintf(err, errlen, "message larger than %d bytes",
                 CTLD_MAX_MESSAGE);
        return NULL;
    }

    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        snprintf(err, errlen, "unreadable message");
        return NULL;
    }

    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);

    len = GRPC_SLICE_LENGTH(s);

    if (len > CTLD_MAX_MESSAGE) {
        grpc_slice_unref(s);
        snprintf(err, errlen, "message larger than %d bytes",
                 CTLD_MAX_MESSAGE);
        return NULL;
    }

    m = protobuf_c_message_unpack(d, NULL, len, GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);

    if (m == NULL) {
        snprintf(err, errlen, "malformed %s", d->name);
        return NULL;
    }

    if (!protobuf_c_message_check(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        snprintf(err, errlen, "invalid %s", d->name);
        return NULL;
    }

    return m;
}


grpc_slice
ctld_codec_pack_slice(const ProtobufCMessage *m)
{
    size_t      len;
    grpc_slice  s;

    len = protobuf_c_message_get_packed_size(m);
    s = grpc_slice_malloc(len);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));

    return s;
}


grpc_byte_buffer *
ctld_codec_pack(const ProtobufCMessage *m)
{
    grpc_slice         s;
    grpc_byte_buffer  *bb;

    s = ctld_codec_pack_slice(m);
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    return bb;
}
