// SPDX-License-Identifier: Apache-2.0
#include <stdio.h>
#include <cjson/cJSON.h>

#include "error.h"

int cw_error_set(struct cw_error *e, int code, const char *fmt, ...)
{
	va_list ap;

	if (e->code)
		return -1;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

void cw_error_details(struct cw_error *e, const char *fmt, ...)
{
	va_list ap;

	if (e->details[0])
		return;
	va_start(ap, fmt);
	vsnprintf(e->details, sizeof(e->details), fmt, ap);
	va_end(ap);
}

char *cw_error_format(const struct cw_error *e, const char *cni_version)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "cniVersion", cni_version ? cni_version : "1.1.0");
	cJSON_AddNumberToObject(o, "code", e->code ? e->code : CW_ERR_IO);
	cJSON_AddStringToObject(o, "msg", e->msg[0] ? e->msg : "unknown error");
	if (e->details[0])
		cJSON_AddStringToObject(o, "details", e->details);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}
