/* cairn-store: single-node command over the storage core (being written). */
#include "cairn/err.h"
#include <stdio.h>
int main(void) { fprintf(stderr, "cairn-store: not built yet\n"); return 2; }
