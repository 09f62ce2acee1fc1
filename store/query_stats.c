/* Statistics of `query --stats`: count, sum, min and max of float32
 * values, NaN left out. Touches no HDF5. */
#include "store_private.h"

#include <math.h>

void sp__acc_add(sp__acc *a, const float *v, const uint8_t *mask, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!mask[i] || isnan(v[i]))
            continue;
        if (a->count == 0 || v[i] < a->min)
            a->min = v[i];
        if (a->count == 0 || v[i] > a->max)
            a->max = v[i];
        a->count++;
        a->sum += (double)v[i];
    }
}

void sp__acc_merge(sp__acc *into, const sp__acc *a) {
    if (a->count == 0)
        return;
    if (into->count == 0 || a->min < into->min)
        into->min = a->min;
    if (into->count == 0 || a->max > into->max)
        into->max = a->max;
    into->count += a->count;
    into->sum += a->sum;
}
