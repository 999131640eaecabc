/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CAUSEWAY_UTIL_H
#define CAUSEWAY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* close(fd) if fd >= 0, keeping errno. */
void cw_close(int fd);
int cw_mkdir_p(const char *path, mode_t mode);
/* Read a whole file (NUL-terminated); *out is the caller's. */
int cw_read_file(const char *path, char **out, size_t *len);
/* Write via a temporary file and rename: readers see old or new, never
 * half.  @durable adds an fsync for state that must outlive a crash. */
int cw_write_file_atomic(const char *path, const char *data, size_t len, bool durable);
/* Read all of a file descriptor (NUL-terminated), up to @max bytes. */
int cw_read_fd(int fd, size_t max, char **out, size_t *len);
int cw_write_sysctl(const char *path, const char *value);
/*
 * Appends @n bytes of @p to the growable buffer (*@data, *@len, *@cap),
 * keeping it NUL-terminated; the capacity doubles, starting at @min_cap.
 * 0, or -ENOMEM with the buffer as it was.
 */
int cw_buf_append(char **data, size_t *len, size_t *cap, size_t min_cap, const void *p, size_t n);

#endif
