
/*
 * Copyright (C) The relay authors
 */


/*
 * The policy text format (lib/relay_policy.c): what operators write and
 * relayctl sends, parsed by controld and nginx.conf alike.  A text that
 * parses is validated; a valid one is rendered to its canonical form,
 * which must parse back to the same policy (the same packed message,
 * but for fields this version does not know: protobuf-c keeps them, the
 * text form cannot) and render to the same text.
 */


#include "relay_policy.h"
#include "relay_diff.h"
#include "fuzz.h"


static size_t
fuzz_packed(const relay_policy_t *p, uint8_t **out)
{
    size_t  len;

    len = protobuf_c_message_get_packed_size(&p->base);
    *out = malloc(len ? len : 1);
    if (*out == NULL) {
        abort();
    }

    return protobuf_c_message_pack(&p->base, *out);
}


/* fields of a later version, kept by protobuf-c: the text has none */

static void
fuzz_strip(ProtobufCMessage *m)
{
    size_t                           i, j, n;
    ProtobufCMessage               **elts;
    const ProtobufCFieldDescriptor  *f;

    for (i = 0; i < m->n_unknown_fields; i++) {
        free(m->unknown_fields[i].data);
    }

    free(m->unknown_fields);
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;

    for (i = 0; i < m->descriptor->n_fields; i++) {
        f = &m->descriptor->fields[i];

        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }

        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(size_t *) ((char *) m + f->quantifier_offset);
            elts = *(ProtobufCMessage ***) ((char *) m + f->offset);

            for (j = 0; j < n; j++) {
                fuzz_strip(elts[j]);
            }

        } else if (*(ProtobufCMessage **) ((char *) m + f->offset)) {
            fuzz_strip(*(ProtobufCMessage **) ((char *) m + f->offset));
        }
    }
}


void
fuzz_round_trip(relay_policy_t *p)
{
    char            *r1, *r2, err[512];
    size_t           l1, l2, i, j;
    uint8_t         *b1, *b2;
    relay_policy_t  *q;

    r1 = relay_policy_render(p);
    fuzz_assert(r1 != NULL);

    q = relay_policy_parse("canonical", r1, strlen(r1), err, sizeof(err));
    if (q == NULL) {
        fprintf(stderr, "canonical text does not parse: %s\n%s\n", err, r1);
        abort();
    }

    if (relay_policy_validate(q, err, sizeof(err)) != 0) {
        fprintf(stderr, "canonical text does not validate: %s\n", err);
        abort();
    }

    r2 = relay_policy_render(q);
    fuzz_assert(r2 != NULL && strcmp(r1, r2) == 0);

    fuzz_strip(&p->base);

    /* an egress weight of 0 (proto3's unset) is 1, which the text says */

    for (i = 0; i < p->n_egress_pools; i++) {
        for (j = 0; j < p->egress_pools[i]->n_addresses; j++) {
            if (p->egress_pools[i]->addresses[j]->weight == 0) {
                p->egress_pools[i]->addresses[j]->weight = 1;
            }
        }
    }

    l1 = fuzz_packed(p, &b1);
    l2 = fuzz_packed(q, &b2);

    if (l1 != l2 || memcmp(b1, b2, l1) != 0) {
        fprintf(stderr, "round trip changed the policy:\n%s\n", r1);
        abort();
    }

    free(b1);
    free(b2);
    free(r1);
    free(r2);
    relay_policy_free(q);
}


#ifndef FUZZ_NO_MAIN

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char            *text, err[512];
    relay_policy_t  *p;

    text = (char *) fuzz_dup(data, size);

    p = relay_policy_parse("fuzz", text, size, err, sizeof(err));

    if (p != NULL) {
        if (relay_policy_validate(p, err, sizeof(err)) == 0) {
            fuzz_round_trip(p);
        }

        relay_policy_free(p);
    }

    free(text);

    return 0;
}

#endif
