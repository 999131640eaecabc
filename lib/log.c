// SPDX-License-Identifier: Apache-2.0
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#include <causeway/log.h>

/* One process-wide sink; both binaries are single-threaded. */
static struct {
	enum cw_log_level level;
	FILE *file;
	char tag[32];
} logger = { .level = CW_LOG_WARN, .tag = "causeway" };

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void cw_log_set_level(enum cw_log_level level)
{
	logger.level = level;
}

bool cw_log_parse_level(const char *name, enum cw_log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum cw_log_level)i;
			return true;
		}
	}
	return false;
}

int cw_log_open(const char *path, const char *tag)
{
	FILE *f = fopen(path, "ae");

	if (tag)
		snprintf(logger.tag, sizeof(logger.tag), "%s", tag);
	if (!f)
		return -1;
	setvbuf(f, NULL, _IOLBF, 0);
	cw_log_close();
	logger.file = f;
	return 0;
}

void cw_log_close(void)
{
	if (logger.file)
		fclose(logger.file);
	logger.file = NULL;
}

static void vlog(enum cw_log_level level, const char *fmt, va_list ap)
{
	char msg[1024], stamp[40];
	struct timespec ts;
	struct tm tm;
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';

	/* With a log file, stderr keeps only what the runtime should surface. */
	if (!logger.file || level >= CW_LOG_WARN)
		fprintf(stderr, "%s: %s: %s\n", logger.tag, level_names[level], msg);
	if (!logger.file)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(logger.file, "%s.%03ldZ %s[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000,
		logger.tag, (int)getpid(), level_names[level], msg);
}

void cw_log(enum cw_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level < logger.level)
		return;
	va_start(ap, fmt);
	vlog(level, fmt, ap);
	va_end(ap);
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	enum cw_log_level l = level == LIBBPF_WARN ? CW_LOG_WARN :
			      level == LIBBPF_INFO ? CW_LOG_INFO : CW_LOG_DEBUG;

	/*
	 * The kernel's extended ack of a netlink request that failed: the
	 * caller reports the failure with its context, and some failures are
	 * expected (a tc query on a link with no clsact qdisc, the qdisc
	 * already there), so the kernel's wording is a detail for -v.
	 */
	if (strstr(fmt, "Kernel error message"))
		l = CW_LOG_DEBUG;

	if (l < logger.level)
		return 0;
	vlog(l, fmt, ap);
	return 0;
}

void cw_log_capture_libbpf(void)
{
	libbpf_set_print(libbpf_print);
}
