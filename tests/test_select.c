/* tests/test_select.c — which device a KILN_BACKEND selection names.
 *
 * Every test runs with three plugins on KILN_PLUGIN_PATH: cpu (score 50),
 * the test plugin "good" (score 5; devices "Good Device Alpha" and "Good
 * Device Beta") and "probezero" (refused: its probe returns 0). The registry
 * is built on the first kiln call of each test process, so the path is set
 * in the suite's .init, in the test's process, and nothing here calls kiln
 * outside a test.
 *
 * The installed plugin directory is searched too and may hold real plugins,
 * so no test counts every device or assumes cpu has the best score.
 */
#include "expect.h"

#include <kiln/kiln.h>

#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEN 4096

static void setup(void)
{
    const char *cpu     = expect_env("KILN_PLUGIN_PATH");
    const char *plugins = expect_env("KILN_TEST_PLUGINS");
    char        path[LEN];
    int n = snprintf(path, sizeof path, "%s:%s/good/.libs:%s/probe_zero/.libs", cpu,
                     plugins, plugins);
    cr_assert(n > 0 && (size_t)n < sizeof path, "KILN_PLUGIN_PATH too long");
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);
    unsetenv("KILN_BACKEND");
}

TestSuite(select, .init = setup);
TestSuite(context, .init = setup);

/* ---- helpers ------------------------------------------------------------------- */

static const kiln_device_report *device_at(size_t k)
{
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d);
    cr_assert_lt(k, n, "device index %zu, but kiln_devices() lists %zu", k, n);
    return &d[k];
}

/* kiln_select(spec) succeeds; returns the device it names. */
static const kiln_device_report *select_ok(const char *spec)
{
    size_t      k  = SIZE_MAX;
    kiln_status st = kiln_select(spec, &k);
    cr_assert_eq(st, KILN_OK, "kiln_select(\"%s\"): %s: %s", spec ? spec : "(null)",
                 kiln_status_name(st), kiln_last_error());
    return device_at(k);
}

static void assert_device(const kiln_device_report *d, const char *spec,
                          const char *backend, int index)
{
    cr_assert_str_eq(d->backend, backend, "\"%s\" selected %s:%d, expected %s:%d", spec,
                     d->backend, d->index, backend, index);
    cr_assert_eq(d->index, index, "\"%s\" selected %s:%d, expected %s:%d", spec,
                 d->backend, d->index, backend, index);
}

static void assert_selects(const char *spec, const char *backend, int index)
{
    assert_device(select_ok(spec), spec, backend, index);
}

static void assert_lists_devices(const char *msg)
{
    cr_assert(strstr(msg, "cpu:0") && strstr(msg, "good:0") && strstr(msg, "good:1"),
              "the message does not list the devices (cpu:0, good:0, good:1): %s", msg);
}

/* The message names the offending value and lists what is available. */
static void assert_helpful(const char *msg, const char *spec)
{
    cr_assert(strstr(msg, spec), "the message does not quote \"%s\": %s", spec, msg);
    assert_lists_devices(msg);
}

/* kiln_select(spec) fails with status `want`; the message is helpful and
 * contains `also` (unless NULL). */
static void assert_refused(const char *spec, kiln_status want, const char *also)
{
    size_t      k   = SIZE_MAX;
    kiln_status st  = kiln_select(spec, &k);
    const char *msg = kiln_last_error();
    cr_assert_eq(st, want, "kiln_select(\"%s\"): %s, expected %s (%s)", spec,
                 kiln_status_name(st), kiln_status_name(want), msg);
    assert_helpful(msg, spec);
    if (also)
        cr_assert(strstr(msg, also), "the message does not say \"%s\": %s", also, msg);
}

/* The context runs on backend:index ("good:1 (Good Device Beta)"). */
static void assert_context_on(kiln_context *ctx, const char *backend, int index)
{
    char want[64];
    snprintf(want, sizeof want, "%s:%d", backend, index);
    const char *label = kiln_context_device(ctx);
    size_t      n     = strlen(want);
    cr_assert(strncmp(label, want, n) == 0 && (label[n] == '\0' || label[n] == ' '),
              "context on \"%s\", expected %s", label, want);
}

/* Fails if a context was made; frees it first, so the failure is not a leak. */
static void assert_no_context(kiln_context *ctx, const char *what)
{
    if (!ctx)
        return;
    char label[256];
    snprintf(label, sizeof label, "%s", kiln_context_device(ctx));
    kiln_context_free(ctx);
    cr_assert_fail("%s gave a context on %s", what, label);
}

/* The usable plugin report of a backend, or NULL. */
static const kiln_plugin_report *plugin_named(const char *name)
{
    const kiln_plugin_report *r;
    size_t                    n = kiln_plugins(&r);
    for (size_t i = 0; i < n; i++)
        if (!r[i].reason && r[i].name && strcmp(r[i].name, name) == 0)
            return &r[i];
    return NULL;
}

/* ---- forms that select ----------------------------------------------------------- */

Test(select, backend_name_selects_its_device_0)
{
    assert_selects("cpu", "cpu", 0);
    assert_selects("good", "good", 0);
    cr_assert_str_eq(select_ok("good")->name, "Good Device Alpha");
}

Test(select, index_selects_that_device)
{
    assert_selects("good:0", "good", 0);
    assert_selects("good:1", "good", 1);
    cr_assert_str_eq(select_ok("good:1")->name, "Good Device Beta");
}

Test(select, text_selects_device_whose_name_contains_it_ignoring_case)
{
    assert_selects("good:beta", "good", 1);
    assert_selects("GOOD:ALPHA", "good", 0);
    assert_selects("good:Device Beta", "good", 1);
    assert_selects("Good:alp", "good", 0);
}

Test(select, list_selects_first_entry_that_resolves)
{
    assert_selects("nonexistent,cpu", "cpu", 0);
    assert_selects("good:gamma,good:1", "good", 1);
    assert_selects("probezero,good", "good", 0);
    assert_selects("cpu,good:1", "cpu", 0);
}

Test(select, whitespace_around_entries_is_ignored)
{
    assert_selects(" cpu ", "cpu", 0);
    assert_selects("\tgood:1\n", "good", 1);
    assert_selects("nonexistent , good:beta", "good", 1);
}

Test(select, null_selects_highest_probe_score)
{
    const kiln_plugin_report *cpu = plugin_named("cpu"), *good = plugin_named("good");
    cr_assert_not_null(cpu, "the cpu plugin did not load");
    cr_assert_not_null(good, "the good plugin did not load");
    cr_assert_gt(cpu->score, good->score, "cpu scores %d, good %d", cpu->score,
                 good->score);

    /* Another installed plugin may beat cpu; none may lose to the choice. */
    const kiln_device_report *d    = select_ok(NULL);
    const kiln_plugin_report *best = plugin_named(d->backend);
    cr_assert_not_null(best);
    const kiln_plugin_report *r;
    size_t                    n = kiln_plugins(&r);
    for (size_t i = 0; i < n; i++)
        cr_assert_leq(r[i].reason ? 0 : r[i].score, best->score,
                      "%s (score %d) selected over %s (score %d)", d->backend,
                      best->score, r[i].name ? r[i].name : r[i].path, r[i].score);
    cr_assert_str_neq(d->backend, "good");
}

Test(select, device_index_is_into_kiln_devices)
{
    const kiln_device_report *all;
    size_t                    n = kiln_devices(&all);
    size_t                    k = SIZE_MAX;
    cr_assert_eq(kiln_select("good:1", &k), KILN_OK, "%s", kiln_last_error());
    cr_assert_lt(k, n);
    cr_assert_str_eq(all[k].backend, "good");
    cr_assert_eq(all[k].index, 1);
    cr_assert_str_eq(all[k].name, "Good Device Beta");
}

Test(select, devices_lists_both_devices_of_good)
{
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d), seen = 0;
    static const char *const  names[] = {"Good Device Alpha", "Good Device Beta"};
    for (size_t i = 0; i < n; i++) {
        if (strcmp(d[i].backend, "good") != 0)
            continue;
        cr_assert(d[i].index == 0 || d[i].index == 1, "good:%d", d[i].index);
        cr_assert_str_eq(d[i].name, names[d[i].index]);
        cr_assert_not_null(d[i].description);
        cr_assert_eq(d[i].type, KILN_DEVICE_CPU);
        cr_assert_null(d[i].unusable, "good:%d unusable: %s", d[i].index, d[i].unusable);
        seen |= 1u << d[i].index;
    }
    cr_assert_eq(seen, 3, "good's devices listed: mask %zu, expected 0 and 1", seen);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_neq(d[i].backend, "probezero", "a refused plugin has devices");
}

/* ---- forms that do not ------------------------------------------------------------ */

Test(select, unknown_backend_is_not_found)
{
    assert_refused("nonexistent", KILN_ERR_NOT_FOUND, NULL);
}

Test(select, index_past_the_last_device_is_not_found)
{
    assert_refused("good:2", KILN_ERR_NOT_FOUND, NULL);
}

Test(select, text_matching_no_device_is_not_found)
{
    assert_refused("good:gamma", KILN_ERR_NOT_FOUND, NULL);
}

Test(select, refused_plugin_is_not_found_and_says_why)
{
    assert_refused("probezero", KILN_ERR_NOT_FOUND, "probe returned 0");
}

Test(select, list_where_nothing_resolves_is_not_found)
{
    assert_refused("nonexistent,good:2", KILN_ERR_NOT_FOUND, NULL);
}

Test(select, malformed_spec_is_an_invalid_argument)
{
    assert_refused("cpu:", KILN_ERR_INVALID_ARG, NULL);
    assert_refused(",", KILN_ERR_INVALID_ARG, NULL);
}

/* An empty or blank selection means the same as none: the best score. */
Test(select, empty_spec_takes_the_best_score)
{
    const kiln_device_report *best    = select_ok(NULL);
    static const char *const  specs[] = {"", "  "};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        cr_assert_eq(select_ok(specs[i]), best,
                     "kiln_select(\"%s\") differs from "
                     "kiln_select(NULL)",
                     specs[i]);
}

/* ---- contexts: KILN_BACKEND and kiln_context_new_for ------------------------------ */

Test(context, new_uses_KILN_BACKEND)
{
    cr_assert_eq(setenv("KILN_BACKEND", "good:beta", 1), 0);
    kiln_context *ctx = kiln_context_new();
    cr_assert_not_null(ctx, "KILN_BACKEND=good:beta: %s", kiln_last_error());
    assert_context_on(ctx, "good", 1);
    kiln_context_free(ctx);
}

Test(context, new_accepts_a_KILN_BACKEND_list_with_spaces)
{
    cr_assert_eq(setenv("KILN_BACKEND", " nonexistent, cpu ", 1), 0);
    kiln_context *ctx = kiln_context_new();
    cr_assert_not_null(ctx, "KILN_BACKEND=\" nonexistent, cpu \": %s", kiln_last_error());
    assert_context_on(ctx, "cpu", 0);
    kiln_context_free(ctx);
}

Test(context, new_without_KILN_BACKEND_takes_the_best_score)
{
    const kiln_device_report *best = select_ok(NULL);
    kiln_context             *ctx  = kiln_context_new();
    cr_assert_not_null(ctx, "KILN_BACKEND unset: %s", kiln_last_error());
    assert_context_on(ctx, best->backend, best->index);
    kiln_context_free(ctx);
}

Test(context, new_refuses_KILN_BACKEND_that_names_nothing)
{
    static const char *const specs[] = {"nonexistent", "good:2", "good:gamma",
                                        "probezero"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        cr_assert_eq(setenv("KILN_BACKEND", specs[i], 1), 0);
        kiln_context *ctx = kiln_context_new();
        assert_no_context(ctx, specs[i]);
        assert_helpful(kiln_last_error(), specs[i]);
    }
}

Test(context, new_treats_empty_KILN_BACKEND_as_unset)
{
    const kiln_device_report *best = select_ok(NULL);
    cr_assert_eq(setenv("KILN_BACKEND", "", 1), 0);
    kiln_context *ctx = kiln_context_new();
    cr_assert_not_null(ctx, "KILN_BACKEND=\"\": %s", kiln_last_error());
    assert_context_on(ctx, best->backend, best->index);
    kiln_context_free(ctx);
}

Test(context, new_for_ignores_KILN_BACKEND)
{
    cr_assert_eq(setenv("KILN_BACKEND", "nonexistent", 1), 0);
    kiln_context *ctx = kiln_context_new_for("GOOD:ALPHA");
    cr_assert_not_null(ctx, "kiln_context_new_for(\"GOOD:ALPHA\"): %s",
                       kiln_last_error());
    assert_context_on(ctx, "good", 0);
    kiln_context_free(ctx);

    ctx = kiln_context_new_for("good:1");
    cr_assert_not_null(ctx, "kiln_context_new_for(\"good:1\"): %s", kiln_last_error());
    assert_context_on(ctx, "good", 1);
    kiln_context_free(ctx);
}

Test(context, new_for_refuses_a_device_that_does_not_exist)
{
    kiln_context *ctx = kiln_context_new_for("good:gamma");
    assert_no_context(ctx, "good:gamma");
    assert_helpful(kiln_last_error(), "good:gamma");

    ctx = kiln_context_new_for("probezero");
    assert_no_context(ctx, "probezero");
    assert_helpful(kiln_last_error(), "probezero");
    cr_assert(strstr(kiln_last_error(), "probe returned 0"), "%s", kiln_last_error());
}

/* kiln_context_device_index names the device kiln_select gave, so a program
 * reads the chosen device's report instead of selecting again. */
Test(context, device_index_is_the_device_select_gives)
{
    static const char *const specs[] = {"cpu", "good:1", "GOOD:ALPHA",
                                        "nonexistent,good:beta"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        size_t want = SIZE_MAX, got = SIZE_MAX;
        cr_assert_eq(kiln_select(specs[i], &want), KILN_OK, "kiln_select(\"%s\"): %s",
                     specs[i], kiln_last_error());
        kiln_context *ctx = kiln_context_new_for(specs[i]);
        cr_assert_not_null(ctx, "kiln_context_new_for(\"%s\"): %s", specs[i],
                           kiln_last_error());
        kiln_status st = kiln_context_device_index(ctx, &got);
        kiln_context_free(ctx);
        cr_assert_eq(st, KILN_OK, "\"%s\": %s: %s", specs[i], kiln_status_name(st),
                     kiln_last_error());
        cr_assert_eq(got, want,
                     "\"%s\": the context reports device %zu, kiln_select "
                     "gave %zu",
                     specs[i], got, want);
    }
}

Test(context, device_index_refuses_null)
{
    size_t k = 7;
    cr_assert_eq(kiln_context_device_index(NULL, &k), KILN_ERR_INVALID_ARG);
    cr_assert_eq(k, 7, "a failed call changed *device");
    cr_assert(strstr(kiln_last_error(), "kiln_context_device_index"), "%s",
              kiln_last_error());
    kiln_context *ctx = kiln_context_new_for("cpu");
    cr_assert_not_null(ctx, "%s", kiln_last_error());
    kiln_status st = kiln_context_device_index(ctx, NULL);
    kiln_context_free(ctx);
    cr_assert_eq(st, KILN_ERR_INVALID_ARG);
}
