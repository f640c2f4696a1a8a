/*
 * client_json.h: JSON output for libcairn and the `cairn` CLI (private to client/).
 *
 * The CLI promises exactly one JSON object on stdout with --json, and job
 * results arrive as msgpack maps; both go through these writers so that every
 * string is escaped the same way. Strings are bytes from the network: invalid
 * UTF-8 becomes U+FFFD rather than producing output a JSON parser rejects, and
 * every control character is escaped. msgpack bin values (no JSON type) are
 * written as lower-case hex strings.
 *
 * All writers append to a caller-embedded cairn_buf and return CAIRN_OK,
 * CAIRN_ENOMEM or CAIRN_ETOOBIG (the buffer's max).
 */
#ifndef CAIRN_CLIENT_JSON_H
#define CAIRN_CLIENT_JSON_H

#include "cairn/bytes.h"

struct cairn_mval;

/* "..." with escapes; s need not be NUL-terminated. */
int cairn__json_str(struct cairn_buf *b, const char *s, size_t len);
/* Same for a NUL-terminated string; NULL writes null. */
int cairn__json_cstr(struct cairn_buf *b, const char *s);
/* Raw text (punctuation, numbers already formatted). */
int cairn__json_raw(struct cairn_buf *b, const char *s);
int cairn__json_u64(struct cairn_buf *b, uint64_t v);
int cairn__json_i64(struct cairn_buf *b, int64_t v);
/* "key": (with a leading comma unless first). */
int cairn__json_key(struct cairn_buf *b, const char *key, bool first);
/* A decoded msgpack value as JSON (maps keep wire order). */
int cairn__json_mval(struct cairn_buf *b, const struct cairn_mval *v);
/* NUL-terminate the buffer's text without counting the NUL in len. */
int cairn__json_finish(struct cairn_buf *b);

#endif
