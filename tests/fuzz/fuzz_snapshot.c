
/*
 * Copyright (C) The relay authors
 */


/*
 * What a node decodes from controld (ngx_relay_control.c): a
 * ControlMessage (first octet even) or a Policy alone (odd), unpacked by
 * protobuf-c.  A policy is validated as the node validates it; a valid
 * one must render to text that parses back to the same policy (what
 * relayctl get and diff show must be what runs), and a queue command is
 * packed again as the node hands it to its thread.
 */


#define FUZZ_NO_MAIN
#include "fuzz_policy_text.c"


static void
fuzz_policy(relay_policy_t *p)
{
    char  err[512];

    if (relay_policy_validate(p, err, sizeof(err)) == 0) {
        fuzz_round_trip(p);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                               len;
    uint8_t                             *buf, *packed;
    relay_policy_t                      *p;
    Relay__Control__V1__ControlMessage  *cm;

    if (size == 0) {
        return 0;
    }

    buf = fuzz_dup(data + 1, size - 1);

    if (data[0] & 1) {
        p = relay__control__v1__policy__unpack(NULL, size - 1, buf);

        if (p) {
            fuzz_policy(p);
            relay_policy_free(p);
        }

        free(buf);
        return 0;
    }

    cm = relay__control__v1__control_message__unpack(NULL, size - 1, buf);

    if (cm) {
        switch (cm->msg_case) {

        case RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_POLICY:
            if (cm->policy) {
                fuzz_policy(cm->policy);
            }
            break;

        case RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_COMMAND:
            len = protobuf_c_message_get_packed_size(&cm->command->base);
            packed = malloc(len ? len : 1);
            fuzz_assert(packed != NULL);
            fuzz_assert(protobuf_c_message_pack(&cm->command->base, packed)
                        == len);
            free(packed);
            break;

        default:
            break;
        }

        relay__control__v1__control_message__free_unpacked(cm, NULL);
    }

    free(buf);

    return 0;
}
