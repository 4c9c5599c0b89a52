/* tests/test_kiln_info.c — kiln-info --json, run as a program and read back
 * with Jansson's parser, against what the library itself reports through
 * kiln_plugins(), kiln_devices() and kiln_select() in this process: the
 * same plugins and devices, the capabilities the environment asks for
 * (KILN_CPU_ISA, KILN_NUM_THREADS), a refused plugin with its reason, and
 * the selection, its reason and the exit status for each KILN_BACKEND. */
#include "backends.h"
#include "expect.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define TOOL "./tools/kiln-info"

/* Runs `env kiln-info --json`; the parsed object, and its exit status. */
static json_t *run_json(const char *env, int *rc)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "env %s timeout 60 " TOOL " --json", env);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    json_error_t err;
    json_t      *doc    = json_loadf(p, 0, &err);
    int          status = pclose(p);
    cr_assert(WIFEXITED(status), "%s did not exit normally", cmd);
    *rc = WEXITSTATUS(status);
    cr_assert_not_null(doc, "%s wrote no JSON: %s at line %d", cmd, err.text, err.line);
    cr_assert(json_is_object(doc), "%s: not one object", cmd);
    return doc;
}

static const char *str(json_t *o, const char *key);

/* Runs kiln-info --json with env, expects exit status `status`, and gives
 * the document (for json_decref) and its "selection". */
static json_t *selection_of(const char *env, int status, json_t **doc)
{
    int rc;
    *doc = run_json(env, &rc);
    cr_assert_eq(rc, status, "kiln-info with %s exited %d, expected %d", env, rc, status);
    json_t *sel = json_object_get(*doc, "selection");
    cr_assert(json_is_object(sel), "no \"selection\" object");
    return sel;
}

static void expect_why(json_t *sel, const char *text)
{
    cr_assert(strstr(str(sel, "why"), text), "why: \"%s\", expected it to say \"%s\"",
              str(sel, "why"), text);
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "\"%s\" is not a string", key);
    return json_string_value(v);
}

static json_t *device_by_id(json_t *doc, const char *id)
{
    size_t  i;
    json_t *d;
    json_array_foreach(json_object_get(doc, "devices"), i, d)
    {
        if (strcmp(str(d, "id"), id) == 0)
            return d;
    }
    return NULL;
}

Test(kiln_info, lists_what_the_library_lists)
{
    int     rc;
    json_t *doc = run_json("", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(str(doc, "kiln_version"), kiln_version());

    const kiln_plugin_report *p;
    size_t                    np      = kiln_plugins(&p);
    json_t                   *plugins = json_object_get(doc, "plugins");
    cr_assert_eq(json_array_size(plugins), np);
    for (size_t i = 0; i < np; i++) {
        json_t *o = json_array_get(plugins, i);
        cr_assert_str_eq(str(o, "path"), p[i].path);
        cr_assert_eq(json_is_true(json_object_get(o, "usable")), p[i].reason == NULL);
        cr_assert_eq(json_integer_value(json_object_get(o, "score")), p[i].score);
        cr_assert_eq(json_integer_value(json_object_get(o, "devices")), p[i].n_devices);
    }

    /* the communicators too, the loopback always among them */
    size_t  nc    = kiln_comm_plugins(&p);
    json_t *comms = json_object_get(doc, "communicators");
    cr_assert_eq(json_array_size(comms), nc);
    bool loopback = false;
    for (size_t i = 0; i < nc; i++) {
        json_t *o = json_array_get(comms, i);
        cr_assert_str_eq(str(o, "path"), p[i].path);
        cr_assert_eq(json_integer_value(json_object_get(o, "probe")), p[i].score);
        loopback |= p[i].name && strcmp(p[i].name, "loopback") == 0 && p[i].score == 1;
    }
    cr_assert(loopback, "no loopback communicator among %zu", nc);

    const kiln_device_report *d;
    size_t                    nd      = kiln_devices(&d);
    json_t                   *devices = json_object_get(doc, "devices");
    cr_assert_eq(json_array_size(devices), nd);
    for (size_t i = 0; i < nd; i++) {
        json_t *o = json_array_get(devices, i);
        cr_assert_str_eq(str(o, "backend"), d[i].backend);
        cr_assert_eq(json_integer_value(json_object_get(o, "index")), d[i].index);
        cr_assert_str_eq(str(o, "name"), d[i].name);
        cr_assert_eq((uint64_t)json_integer_value(json_object_get(o, "memory_bytes")),
                     d[i].memory);
        cr_assert(json_is_object(json_object_get(o, "capabilities")));
    }

    size_t k;
    cr_assert_eq(kiln_select(NULL, &k), KILN_OK);
    json_t *sel = json_object_get(doc, "selection");
    cr_assert(json_is_true(json_object_get(sel, "ok")));
    cr_assert(json_is_null(json_object_get(sel, "KILN_BACKEND")));
    cr_assert_eq((size_t)json_integer_value(json_object_get(sel, "device_index")), k);
    expect_why(sel, "highest probe score");
    json_decref(doc);
}

Test(kiln_info, cpu_capabilities_follow_the_environment)
{
    int     rc;
    json_t *doc = run_json("KILN_CPU_ISA=scalar KILN_NUM_THREADS=3", &rc);
    cr_assert_eq(rc, 0);
    json_t *cpu = device_by_id(doc, "cpu:0");
    cr_assert_not_null(cpu, "no cpu:0");
    json_t *caps = json_object_get(cpu, "capabilities");
    cr_assert_str_eq(str(caps, "isa"), "scalar");
    cr_assert_eq(json_integer_value(json_object_get(caps, "threads")), 3);
    /* the ISAs listed are those the compiler's own cpuid check finds */
    const char *expected[3];
    size_t      n    = test_cpu_isas(expected);
    json_t     *isas = json_object_get(caps, "isas");
    cr_assert(json_is_array(isas));
    cr_assert_eq(json_array_size(isas), n, "isas lists %zu ISAs, this machine runs %zu",
                 json_array_size(isas), n);
    for (size_t i = 0; i < n; i++) {
        bool listed = false;
        for (size_t j = 0; j < n; j++)
            listed |= strcmp(json_string_value(json_array_get(isas, j)), expected[i]) == 0;
        cr_assert(listed, "isas lacks %s", expected[i]);
    }
    json_decref(doc);
}

Test(kiln_info, opencl_devices_report_their_precision)
{
    const kiln_device_report *d;
    size_t                    nd = kiln_devices(&d);
    bool                      have_cl = false;
    for (size_t i = 0; i < nd; i++)
        have_cl |= strcmp(d[i].backend, "opencl") == 0 && d[i].index == 0 && !d[i].unusable;
    if (!have_cl)
        cr_skip_test("no usable OpenCL device");
    int     rc;
    json_t *doc = run_json("KILN_BACKEND=opencl", &rc);
    cr_assert_eq(rc, 0);
    json_t *cl   = device_by_id(doc, "opencl:0");
    json_t *caps = json_object_get(cl, "capabilities");
    cr_assert(json_is_boolean(json_object_get(caps, "fp64")));
    cr_assert(json_is_boolean(json_object_get(caps, "fp16")));
    cr_assert(json_integer_value(json_object_get(caps, "max_alloc_bytes")) > 0);
    json_t *sel = json_object_get(doc, "selection");
    cr_assert_str_eq(str(sel, "device"), "opencl:0");
    expect_why(sel, "KILN_BACKEND=\"opencl\" names it");
    cr_assert_str_eq(str(sel, "KILN_BACKEND"), "opencl");
    json_decref(doc);
}

Test(kiln_info, a_list_says_which_entry_chose)
{
    json_t *doc, *sel = selection_of("KILN_BACKEND='nothing:0, cpu'", 0, &doc);
    cr_assert_str_eq(str(sel, "device"), "cpu:0");
    expect_why(sel, "entry 2 (\"cpu\")");
    json_decref(doc);
}

Test(kiln_info, nothing_selected_is_status_1_with_the_reason)
{
    json_t *doc, *sel = selection_of("KILN_BACKEND=nosuch", 1, &doc);
    cr_assert(json_is_false(json_object_get(sel, "ok")));
    cr_assert(json_is_null(json_object_get(sel, "device")));
    expect_why(sel, "no backend is named \"nosuch\"");
    json_decref(doc);
}

Test(kiln_info, a_refused_plugin_comes_with_its_reason)
{
    char env[1024];
    snprintf(env, sizeof env, "KILN_PLUGIN_PATH=%s/bad_abi/.libs",
             expect_env("KILN_TEST_PLUGINS"));
    int     rc;
    json_t *doc = run_json(env, &rc);
    cr_assert_eq(rc, 1, "nothing usable is status 1");
    json_t *plugins = json_object_get(doc, "plugins");
    json_t *bad     = NULL;
    size_t  i;
    json_t *o;
    json_array_foreach(plugins, i, o)
    {
        if (strstr(str(o, "path"), "kiln-bad-abi.so"))
            bad = o;
    }
    cr_assert_not_null(bad, "the bad-ABI plugin is not listed");
    cr_assert(json_is_false(json_object_get(bad, "usable")));
    cr_assert(strstr(str(bad, "refused"), "ABI version 999"), "refused: %s",
              str(bad, "refused"));
    cr_assert_str_eq(str(json_object_get(doc, "plugin_path"), "KILN_PLUGIN_PATH"),
                     env + strlen("KILN_PLUGIN_PATH="));
    json_decref(doc);
}

Test(kiln_info, help_names_json)
{
    FILE *p = popen(TOOL " --help", "r");
    cr_assert_not_null(p);
    char   out[2048];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n]   = '\0';
    cr_assert_eq(pclose(p), 0);
    cr_assert(strstr(out, "--json"), "%s", out);
}
