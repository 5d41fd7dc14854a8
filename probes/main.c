/* Not compiled as is: agent/sensors/loader.py pastes common.h and the enabled families into one
 * text (bcc rewrites map calls and makes tracepoint argument structs only in the main file). Kept so that a reader
 * sees the whole program at a glance. */
#include "common.h"
#include "process.bpf.c"
#include "file.bpf.c"
#include "net.bpf.c"
