// Intentionally empty: the module only declares LLVMFuzzerRunDriver (defined by libFuzzer).
#include "cfuzzdriver.h"
