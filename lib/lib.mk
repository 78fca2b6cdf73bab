# lib/: plain C shared by the nginx module, controld and relayctl.
#
# The one list of its files, each a .c with its .h, named without either
# ending, one a line.  controld/Makefile includes this file; module/config
# and tests/unit-policy/run.sh read the same lines ("RELAY_LIB += NAME").
# Adding a file to every build is adding one line here.

RELAY_LIB += relay_policy
RELAY_LIB += relay_scope
RELAY_LIB += relay_diff
RELAY_LIB += relay_buf
RELAY_LIB += relay_queue
RELAY_LIB += relay_json
RELAY_LIB += relay_classify
