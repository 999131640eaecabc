/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CAUSEWAY_LOG_H
#define CAUSEWAY_LOG_H

#include <stdbool.h>

enum cw_log_level { CW_LOG_DEBUG, CW_LOG_INFO, CW_LOG_WARN, CW_LOG_ERROR };

/*
 * Logging goes to stderr and, once cw_log_open() succeeds, to a file too.
 * Never to stdout: the CNI plugin's stdout is its result.
 */
void cw_log_set_level(enum cw_log_level level);
bool cw_log_parse_level(const char *name, enum cw_log_level *out);
int cw_log_open(const char *path, const char *tag);
void cw_log_close(void);
/* Also route libbpf's own messages into this log. */
void cw_log_capture_libbpf(void);

void cw_log(enum cw_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define pr_debug(...) cw_log(CW_LOG_DEBUG, __VA_ARGS__)
#define pr_info(...)  cw_log(CW_LOG_INFO, __VA_ARGS__)
#define pr_warn(...)  cw_log(CW_LOG_WARN, __VA_ARGS__)
#define pr_err(...)   cw_log(CW_LOG_ERROR, __VA_ARGS__)

#endif
