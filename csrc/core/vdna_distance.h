/* vdna_distance.h: part of the public API; include vdna_core.h, not this file. (being written) */
#ifndef VDNA_DISTANCE_H
#define VDNA_DISTANCE_H
#endif
