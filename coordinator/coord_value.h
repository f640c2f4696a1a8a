/*
 * coord_value.h: free-form wire maps (job params and results) to msgpack
 * bytes for storage, and back to wire values.
 *
 * Jobs keep their params and result as msgpack bytes (compact in memory, and
 * what the job record stores). To put them back on the wire they are wrapped
 * into a one-field message envelope and decoded by proto/, which validates
 * them against the wire model's MAP limits: a stored value that does not
 * satisfy the model (a damaged or forged record) is CAIRN_ECORRUPT there, and
 * never reaches a peer.
 */
#ifndef CAIRN_COORD_VALUE_H
#define CAIRN_COORD_VALUE_H

#include "cairn/bytes.h"
#include "cairn/proto.h"

/* Append the msgpack encoding of v (any kind; floats as float 64). */
int coord_value_pack(const struct cairn_mval *v, struct cairn_buf *out);

/*
 * Decode a stored msgpack map into a wire value: *holder is a new message that
 * owns it (destroy it when done), *v the map, borrowed from *holder.
 * CAIRN_ECORRUPT naming `what` when the bytes are not a valid wire map.
 */
int coord_value_unpack(const uint8_t *p, size_t len, const char *what, struct cairn_msg **holder,
                       const struct cairn_mval **v);

/* Set field of m to the stored map (unpack + deep copy). */
int coord_value_set(struct cairn_msg *m, const char *field, const uint8_t *p, size_t len, const char *what);

#endif
