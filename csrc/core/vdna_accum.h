/* vdna_accum.h: part of the public API; include vdna_core.h, not this file. (being written) */
#ifndef VDNA_ACCUM_H
#define VDNA_ACCUM_H
#endif
