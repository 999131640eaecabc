// SPDX-License-Identifier: Apache-2.0
/*
 * Masquerade rules (helper/masq.c) against stand-in iptables and
 * iptables-restore scripts that log what they were asked and answer as
 * told: the ruleset, when iptables runs at all, and the errors a user sees.
 * The real iptables is exercised by the lab (test_helper.py, masquerade).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "masq.h"

static char dir[] = "/tmp/cw-test-masq-XXXXXX";
static char logpath[128];

static void script(const char *name, const char *body)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "#!/bin/sh\n%s", body);
	fclose(f);
	assert_int_equal(chmod(path, 0755), 0);
}

/* A restore that logs its input and an iptables whose -C finds nothing. */
static void good_tools(void)
{
	char body[2048];

	snprintf(body, sizeof(body), "echo \"restore $*\" >> %s; cat >> %s; exit 0\n", logpath,
		 logpath);
	script("iptables-restore", body);
	snprintf(body, sizeof(body),
		 "echo \"iptables $*\" >> %s\ncase \"$*\" in *' -C '*) exit 1;; esac\nexit 0\n",
		 logpath);
	script("iptables", body);
}

static char *slurp(void)
{
	static char buf[8192];
	FILE *f = fopen(logpath, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static struct cw_prefix4 P(const char *s)
{
	struct cw_prefix4 p;

	assert_true(cw_prefix4_parse(s, &p));
	return p;
}

static void test_rules_and_when_they_run(void **state)
{
	struct cw_masq m = { .enabled = true, .iptables_dir = dir };
	struct cw_prefix4 cidrs[] = { P("10.20.1.0/24"), P("10.10.2.0/24"), P("10.10.1.0/24"),
				      P("10.20.1.0/24") };
	const char *log;

	(void)state;
	m.except[m.n_except++] = P("192.168.0.0/16");
	good_tools();
	unlink(logpath);
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), cidrs, 4, 1000), 0);
	log = slurp();
	assert_non_null(strstr(log, "restore -w 5 --noflush\n"
				    "*nat\n:CAUSEWAY-POSTROUTING - [0:0]\n"
				    "-A CAUSEWAY-POSTROUTING ! -s 10.10.1.0/24 -j RETURN\n"
				    /* sorted, each once: ours, the others, the exception */
				    "-A CAUSEWAY-POSTROUTING -d 10.10.1.0/24 -j RETURN\n"
				    "-A CAUSEWAY-POSTROUTING -d 10.10.2.0/24 -j RETURN\n"
				    "-A CAUSEWAY-POSTROUTING -d 10.20.1.0/24 -j RETURN\n"
				    "-A CAUSEWAY-POSTROUTING -d 192.168.0.0/16 -j RETURN\n"
				    "-A CAUSEWAY-POSTROUTING -m comment --comment \"pod traffic "
				    "leaving the mesh\" -j MASQUERADE --random-fully\nCOMMIT\n"
				    /* the tunnel's packets skip conntrack */
				    "*raw\n:CAUSEWAY-RAW - [0:0]\n"
				    "-A CAUSEWAY-RAW -p udp -m udp --dport 8472 -j CT --notrack\n"
				    "COMMIT\n"
				    /* flows the stack destination-NATs are marked for the datapath */
				    "*mangle\n:CAUSEWAY-MANGLE - [0:0]\n"
				    "-A CAUSEWAY-MANGLE -m conntrack --ctstate DNAT --ctdir ORIGINAL "
				    "-j MARK --or-mark 0x400000\nCOMMIT\n"));
	assert_non_null(strstr(log, "iptables -w 5 -t mangle -A POSTROUTING -m comment --comment "
				    "causeway: mark flows the stack destination-NATs -j "
				    "CAUSEWAY-MANGLE\n"));
	assert_non_null(strstr(log, "iptables -w 5 -t raw -A PREROUTING -m comment --comment "
				    "causeway: no conntrack for VXLAN between nodes -j CAUSEWAY-RAW\n"));
	assert_non_null(strstr(log, "iptables -w 5 -t raw -A OUTPUT -m comment --comment "
				    "causeway: no conntrack for VXLAN between nodes -j CAUSEWAY-RAW\n"));
	/* the jump: looked for, then added */
	assert_non_null(strstr(log, "iptables -w 5 -t nat -C POSTROUTING -m comment --comment "
				    "causeway: masquerade pod traffic leaving the mesh -j "
				    "CAUSEWAY-POSTROUTING\n"
				    "iptables -w 5 -t nat -A POSTROUTING"));
	assert_int_equal(m.n_dsts, 4);
	assert_int_equal(m.updates, 1);
	assert_string_equal(m.error, "");

	/* the same set, in another order, soon after: iptables does not run */
	unlink(logpath);
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), cidrs + 1, 3, 2000), 0);
	assert_string_equal(slurp(), "");
	/* ... but after the refresh period it does (rules removed behind our back come back) */
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), cidrs + 1, 3,
				      1000 + CW_MASQ_REFRESH_MS), 0);
	assert_non_null(strstr(slurp(), "restore"));
	/* a node gone: rewritten at once */
	unlink(logpath);
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), cidrs + 1, 2, 1000 + CW_MASQ_REFRESH_MS + 1),
			 0);
	log = slurp();
	assert_null(strstr(log, "10.20.1.0/24"));
	assert_non_null(strstr(log, "-d 10.10.2.0/24 -j RETURN"));
	assert_int_equal(m.updates, 3);

	/* no PodCIDR yet: nothing runs */
	unlink(logpath);
	assert_int_equal(cw_masq_sync(&m, (struct cw_prefix4){ 0 }, cidrs, 4, 999999), 0);
	assert_string_equal(slurp(), "");
	cw_masq_clear(&m);

	/*
	 * masquerading off: no nat rules and no nat jump, but the tunnel's
	 * NOTRACK and the DNAT mark all the same
	 */
	m = (struct cw_masq){ .enabled = false, .iptables_dir = dir };
	unlink(logpath);
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), cidrs, 1, 999999), 0);
	log = slurp();
	assert_non_null(strstr(log, "restore -w 5 --noflush\n*raw\n"));
	assert_non_null(strstr(log, "*mangle\n"));
	assert_null(strstr(log, "*nat"));
	assert_null(strstr(log, "-t nat"));
	assert_non_null(strstr(log, "-t raw -A PREROUTING"));
	assert_non_null(strstr(log, "-t mangle -A POSTROUTING"));
	cw_masq_clear(&m);
}

static void test_errors_name_the_problem(void **state)
{
	struct cw_masq m = { .enabled = true, .iptables_dir = "/nonexistent-causeway" };
	struct cw_prefix4 c = P("10.10.2.0/24");
	char body[512];

	(void)state;
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), &c, 1, 1000), -ENOENT);
	assert_string_equal(m.error, "iptables: iptables-restore not found (install iptables: "
				     "without it the node can neither masquerade nor tell which "
				     "flows the stack NATs)");
	assert_int_equal(m.failures, 1);
	assert_int_equal(m.applied_ms, 0);

	m.iptables_dir = dir;
	snprintf(body, sizeof(body),
		 "echo 'iptables-restore v1.8.9 (nf_tables): Chain MASQUERADE does not exist' >&2\n"
		 "exit 2\n");
	script("iptables-restore", body);
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), &c, 1, 1000), -EIO);
	assert_string_equal(m.error, "iptables: iptables-restore exited with 2: iptables-restore "
				     "v1.8.9 (nf_tables): Chain MASQUERADE does not exist");
	assert_int_equal(m.failures, 2);

	/* a failure is retried at the next sync, however soon, and a success clears it */
	good_tools();
	assert_int_equal(cw_masq_sync(&m, P("10.10.1.0/24"), &c, 1, 1001), 0);
	assert_string_equal(m.error, "");
	assert_int_equal(m.applied_ms, 1001);
	cw_masq_clear(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rules_and_when_they_run),
		cmocka_unit_test(test_errors_name_the_problem),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
