// SPDX-License-Identifier: Apache-2.0
/*
 * helper/kvwatch.c, cw_json_split: the watch stream's splitter.  The etcd
 * gateway writes one JSON object per message, but TCP cuts the bytes
 * anywhere, so the messages handed on must not depend on where the cuts fall.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "kvwatch.h"

#define MAX_MSGS 16

struct sink {
	char *msg[MAX_MSGS];
	size_t len[MAX_MSGS];
	size_t n;
	size_t fail_at; /* 1-based message that gets an error back; 0: none */
	int fail_rc;
};

static int collect(const char *msg, size_t len, void *arg)
{
	struct sink *k = arg;

	assert_true(k->n < MAX_MSGS);
	k->msg[k->n] = malloc(len + 1);
	assert_non_null(k->msg[k->n]);
	memcpy(k->msg[k->n], msg, len);
	k->msg[k->n][len] = '\0';
	k->len[k->n] = len;
	k->n++;
	return k->fail_at == k->n ? k->fail_rc : 0;
}

static void sink_clear(struct sink *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->msg[i]);
	memset(k, 0, sizeof(*k));
}

/*
 * Three gateway messages: a watch creation, an event whose value holds
 * braces, brackets and escaped quotes and backslashes in strings, and a
 * progress notification with nested arrays.
 */
static const char m1[] = "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}";
static const char m2[] =
	"{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\",\"value\":\"}}]]{\\\"\"},"
	"\"note\":\"a \\\\\\\" b\",\"tail\":\"\\\\\",\"x\":\"{\\\\\"}]}}";
static const char m3[] = "{\"a\":[[1,[2,{}]],[]],\"b\":\"]\",\"c\":\"\\u007d\\\"}\",\"d\":{}}";

static void expect_three(const struct sink *k)
{
	const char *want[3] = { m1, m2, m3 };

	assert_int_equal(k->n, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(k->len[i], strlen(want[i]));
		assert_string_equal(k->msg[i], want[i]);
	}
}

static void test_messages_are_json(void **state)
{
	const char *all[3] = { m1, m2, m3 };

	(void)state;
	/* the fixtures are what they claim: valid JSON objects */
	for (int i = 0; i < 3; i++) {
		cJSON *o = cJSON_Parse(all[i]);

		if (!cJSON_IsObject(o))
			fail_msg("fixture %d is not a JSON object: %s", i + 1, all[i]);
		cJSON_Delete(o);
	}
}

/* Feeds @stream cut at the given offsets (ascending, may repeat). */
static int feed_cuts(const char *stream, size_t len, const size_t *cuts, size_t n_cuts,
		     size_t max, struct sink *k)
{
	struct cw_json_splitter s = { 0 };
	size_t from = 0;
	int rc = 0;

	for (size_t i = 0; i <= n_cuts && !rc; i++) {
		size_t to = i < n_cuts ? cuts[i] : len;

		rc = cw_json_split(&s, stream + from, to - from, max, collect, k);
		from = to;
	}
	cw_json_splitter_clear(&s);
	return rc;
}

static char *stream_of(const char *sep1, const char *sep2, const char *sep3, size_t *len)
{
	char *s = NULL;
	int n = asprintf(&s, "%s%s%s%s%s%s", m1, sep1, m2, sep2, m3, sep3);

	assert_true(n > 0);
	*len = (size_t)n;
	return s;
}

static void test_one_byte_at_a_time(void **state)
{
	static const char *const seps[][3] = {
		{ "\n", "\n", "\n" },      /* as the gateway writes */
		{ "\r\n", "\r\n", "" },
		{ "", "", "" },            /* back to back */
		{ " \t\n ", "\n\n", "  " },
	};

	(void)state;
	for (size_t v = 0; v < sizeof(seps) / sizeof(seps[0]); v++) {
		struct cw_json_splitter s = { 0 };
		struct sink k = { 0 };
		size_t len;
		char *stream = stream_of(seps[v][0], seps[v][1], seps[v][2], &len);

		for (size_t i = 0; i < len; i++)
			assert_int_equal(cw_json_split(&s, stream + i, 1, 4096, collect, &k), 0);
		expect_three(&k);
		/* nothing is left over once the last message is out */
		assert_int_equal(s.depth, 0);
		assert_false(s.in_string);
		sink_clear(&k);
		cw_json_splitter_clear(&s);
		free(stream);
	}
}

static void test_every_two_and_three_chunk_split(void **state)
{
	size_t len;
	char *stream = stream_of("\n", "", "\r\n", &len);

	(void)state;
	for (size_t a = 0; a <= len; a++) {
		struct sink k = { 0 };

		assert_int_equal(feed_cuts(stream, len, &a, 1, 4096, &k), 0);
		expect_three(&k);
		sink_clear(&k);
	}
	/* three chunks, every cut pair (including empty chunks) */
	for (size_t a = 0; a <= len; a++)
		for (size_t b = a; b <= len; b++) {
			size_t cuts[2] = { a, b };
			struct sink k = { 0 };

			assert_int_equal(feed_cuts(stream, len, cuts, 2, 4096, &k), 0);
			if (k.n != 3)
				fail_msg("cuts at %zu and %zu: %zu messages", a, b, k.n);
			expect_three(&k);
			sink_clear(&k);
		}
	free(stream);
}

static void test_all_at_once_and_partial(void **state)
{
	struct cw_json_splitter s = { 0 };
	struct sink k = { 0 };
	size_t len;
	char *stream = stream_of("\n", "\n", "\n", &len);

	(void)state;
	/* all three in one read */
	assert_int_equal(cw_json_split(&s, stream, len, 4096, collect, &k), 0);
	expect_three(&k);
	sink_clear(&k);

	/* half a message is held back until the rest arrives */
	assert_int_equal(cw_json_split(&s, m1, 10, 4096, collect, &k), 0);
	assert_int_equal(k.n, 0);
	assert_int_equal(cw_json_split(&s, m1 + 10, strlen(m1) - 10, 4096, collect, &k), 0);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.msg[0], m1);
	sink_clear(&k);

	/* an empty read changes nothing */
	assert_int_equal(cw_json_split(&s, "", 0, 4096, collect, &k), 0);
	assert_int_equal(k.n, 0);
	cw_json_splitter_clear(&s);
	cw_json_splitter_clear(&s);
	free(stream);
}

static void test_junk_between_messages(void **state)
{
	static const char *const junk[] = { "x", "[]", "]", "}", "\"s\"", "1", "null", ",", "\v", "\0" };

	(void)state;
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		struct cw_json_splitter s = { 0 };
		struct sink k = { 0 };
		char buf[256];
		size_t jl = junk[i][0] ? strlen(junk[i]) : 1;
		size_t n = (size_t)snprintf(buf, sizeof(buf), "%s\n", m1);

		memcpy(buf + n, junk[i], jl);
		n += jl;
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n%s\n", m3);

		assert_int_equal(cw_json_split(&s, buf, n, 4096, collect, &k), -EINVAL);
		/* what came before the junk was delivered, nothing after it */
		assert_int_equal(k.n, 1);
		assert_string_equal(k.msg[0], m1);
		sink_clear(&k);
		cw_json_splitter_clear(&s);

		/* the same, one byte at a time */
		int rc = 0;

		for (size_t b = 0; b < n && !rc; b++)
			rc = cw_json_split(&s, buf + b, 1, 4096, collect, &k);
		assert_int_equal(rc, -EINVAL);
		assert_int_equal(k.n, 1);
		sink_clear(&k);
		cw_json_splitter_clear(&s);
	}
}

static void test_message_too_large_in_pieces(void **state)
{
	struct cw_json_splitter s = { 0 };
	struct sink k = { 0 };
	char big[300];
	int rc = 0;
	size_t i;

	(void)state;
	snprintf(big, sizeof(big), "{\"v\":\"%0250d\"}", 0);
	/* byte by byte: refused once the unfinished message passes @max */
	for (i = 0; i < strlen(big) && !rc; i++)
		rc = cw_json_split(&s, big + i, 1, 100, collect, &k);
	assert_int_equal(rc, -EMSGSIZE);
	assert_int_equal(i, 101);
	assert_int_equal(k.n, 0);
	cw_json_splitter_clear(&s);

	/* in two halves */
	assert_int_equal(cw_json_split(&s, big, 150, 100, collect, &k), -EMSGSIZE);
	assert_int_equal(k.n, 0);
	cw_json_splitter_clear(&s);

	/* the limit is per message: many small ones in one read are fine */
	char many[1024];
	size_t n = 0;

	for (int m = 0; m < 12; m++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "%s\n", m1);
	assert_int_equal(cw_json_split(&s, many, n, strlen(m1) + 6, collect, &k), 0);
	assert_int_equal(k.n, 12);
	sink_clear(&k);
	for (size_t b = 0; b < n; b += 37)
		assert_int_equal(cw_json_split(&s, many + b, n - b < 37 ? n - b : 37, strlen(m1) + 6,
					       collect, &k), 0);
	assert_int_equal(k.n, 12);
	sink_clear(&k);
	cw_json_splitter_clear(&s);

	/* exactly @max is allowed, unfinished or not */
	assert_int_equal(cw_json_split(&s, big, 100, 100, collect, &k), 0);
	cw_json_splitter_clear(&s);
	assert_int_equal(cw_json_split(&s, m1, strlen(m1), strlen(m1), collect, &k), 0);
	assert_int_equal(k.n, 1);
	sink_clear(&k);
	cw_json_splitter_clear(&s);
}

/*
 * Regression (found by this test, fixed in 389b2f8): the size check looked
 * only at what was left unfinished after a read, so a message larger than
 * @max that arrived whole in one read was delivered; whether a 300-byte
 * message passed a 100-byte limit depended on how TCP cut the stream.
 */
static void test_message_too_large_whole(void **state)
{
	struct cw_json_splitter s = { 0 };
	struct sink k = { 0 };
	char big[300];

	(void)state;
	snprintf(big, sizeof(big), "{\"v\":\"%0250d\"}", 0);
	int rc = cw_json_split(&s, big, strlen(big), 100, collect, &k);
	size_t delivered = k.n;

	sink_clear(&k);
	cw_json_splitter_clear(&s);
	assert_int_equal(rc, -EMSGSIZE);
	assert_int_equal(delivered, 0);
}

static void test_callback_error_propagated(void **state)
{
	struct cw_json_splitter s = { 0 };
	struct sink k = { .fail_at = 2, .fail_rc = -ECANCELED };
	size_t len;
	char *stream = stream_of("\n", "\n", "\n", &len);

	(void)state;
	assert_int_equal(cw_json_split(&s, stream, len, 4096, collect, &k), -ECANCELED);
	/* the failing message was the last one handed on */
	assert_int_equal(k.n, 2);
	assert_string_equal(k.msg[1], m2);
	sink_clear(&k);
	cw_json_splitter_clear(&s);

	/* a positive value is passed through as it is */
	k.fail_at = 1;
	k.fail_rc = 7;
	assert_int_equal(cw_json_split(&s, m3, strlen(m3), 4096, collect, &k), 7);
	assert_int_equal(k.n, 1);
	sink_clear(&k);
	cw_json_splitter_clear(&s);
	free(stream);
}

static void test_large_stream_grows(void **state)
{
	/* a message well past the first 4 KiB buffer, fed in odd-sized reads */
	size_t n = 200000;
	char *big = malloc(n + 32);
	struct cw_json_splitter s = { 0 };
	struct sink k = { 0 };
	size_t len;

	(void)state;
	assert_non_null(big);
	len = (size_t)sprintf(big, "{\"v\":\"");
	/* braces, brackets, an escaped quote and an escaped backslash, repeated */
	for (size_t i = 0; i < n; i++)
		big[len++] = "{}[]\\\"\\\\"[i % 8];
	len += (size_t)sprintf(big + len, "\"}\n");
	for (size_t b = 0; b < len; b += 4093) {
		size_t c = len - b < 4093 ? len - b : 4093;

		assert_int_equal(cw_json_split(&s, big + b, c, 1 << 20, collect, &k), 0);
	}
	assert_int_equal(k.n, 1);
	assert_int_equal(k.len[0], len - 1);
	assert_memory_equal(k.msg[0], big, len - 1);
	sink_clear(&k);
	cw_json_splitter_clear(&s);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_messages_are_json),
		cmocka_unit_test(test_one_byte_at_a_time),
		cmocka_unit_test(test_every_two_and_three_chunk_split),
		cmocka_unit_test(test_all_at_once_and_partial),
		cmocka_unit_test(test_junk_between_messages),
		cmocka_unit_test(test_message_too_large_in_pieces),
		cmocka_unit_test(test_message_too_large_whole),
		cmocka_unit_test(test_callback_error_propagated),
		cmocka_unit_test(test_large_stream_grows),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
