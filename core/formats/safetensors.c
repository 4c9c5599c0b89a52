/* core/formats/safetensors.c — a graph's parameters on disk, in the safetensors format.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON
 *
 *   {"__metadata__": {"producer": "kiln 0.1.0"},
 *    "fc.weight": {"dtype": "F32", "shape": [784, 10], "data_offsets": [0, 31360]},
 *    ...}
 *
 * padded with spaces so the data starts 8-byte aligned, as the reference
 * writer does, then the tensors' bytes, little-endian, offsets counted from
 * the end of the header. Readers must find the tensors packed: in offset order
 * each starts where the one before it ends, and the last ends at the end of
 * the file. kiln_load checks all of that, and every graph parameter against
 * the file, before it writes any parameter, so a failed load changes nothing.
 *
 * Bytes are assembled with shifts, never by reinterpreting memory, so the
 * files are little-endian on every host.
 *
 * kiln_save writes a temporary file and renames it over the target, so a
 * reader sees the old file or the new one, never half of one. It writes
 * through symbolic links (the temporary file goes in the final target's
 * folder, and the rename replaces the target, not the link), keeps the
 * replaced file's permissions (and owner, where the process may set it),
 * and refuses to replace what is not a regular file: a FIFO, a device or a
 * folder. A file larger than RLIMIT_FSIZE is refused before it is begun, as
 * writing it would end the process with SIGXFSZ and leave the temporary
 * file; any failure removes the temporary file.
 */
#include "../kiln-impl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* The longest header kiln reads: 16 MiB, room for about 100 000 tensors
 * (a tensor takes 100 to 150 bytes of JSON). The reference reader allows
 * 100 MB, but Jansson's values take up to about 80 times the text they are
 * parsed from (an empty object, "{}", 3 bytes with its comma, is a hash
 * table of some 250), so a hostile 100 MB header cost gigabytes and
 * seconds; 16 MiB bounds it near 1.3 GB. The length is checked against the
 * file and this limit before anything is allocated for it. */
#define HEADER_MAX ((uint64_t)16 << 20)

static void put_u64le(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64le(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* n floats to little-endian bytes; out and in may be the same memory. */
static void f32_to_le(void *out, const float *in, size_t n)
{
    unsigned char *b = out;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &in[i], 4);
        for (int k = 0; k < 4; k++)
            b[4 * i + (size_t)k] = (unsigned char)(u >> (8 * k));
    }
}

/* n little-endian floats to host floats, in place. */
static void f32_from_le(float *v, size_t n)
{
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = 0;
        for (int k = 0; k < 4; k++)
            u |= (uint32_t)b[4 * i + (size_t)k] << (8 * k);
        memcpy(&v[i], &u, 4);
    }
}

/* ---- saving: the header ------------------------------------------------------- */

static kiln_status header_no_memory(void)
{
    return kiln__error(KILN_ERR_NO_MEMORY,
                       "kiln_save: out of memory building the header");
}

/* safetensors' name of a float type. */
static const char *st_dtype(kiln_dtype dtype)
{
    return dtype == KILN_F16 ? "F16" : dtype == KILN_BF16 ? "BF16" : "F32";
}

/* {"dtype":"F32","shape":[...],"data_offsets":[begin,end]} for parameter t,
 * stored as dtype; NULL when memory runs out. */
static json_t *tensor_entry(const kiln_tensor *t, kiln_dtype dtype, uint64_t begin,
                            uint64_t end)
{
    json_t *entry = json_object(), *shape = json_array();
    json_t *offsets = json_pack("[II]", (json_int_t)begin, (json_int_t)end);
    bool    ok      = entry && shape && offsets;
    for (int d = 0; ok && d < t->node.ndim; d++)
        ok = json_array_append_new(shape, json_integer(t->node.dims[d])) == 0;
    ok = ok && json_object_set_new(entry, "dtype", json_string(st_dtype(dtype))) == 0 &&
         json_object_set(entry, "shape", shape) == 0 &&
         json_object_set(entry, "data_offsets", offsets) == 0;
    json_decref(shape);
    json_decref(offsets);
    if (!ok) {
        json_decref(entry);
        return NULL;
    }
    return entry;
}

/* Why json_object_set_new refused parameter t's entry: its name is not UTF-8,
 * which the unchecked json_stringn_nocheck accepts, or memory ran out. */
static kiln_status name_refused(const char *name, const kiln_tensor *t, size_t index)
{
    json_t *checked   = json_string(name);
    json_t *unchecked = checked ? NULL : json_stringn_nocheck(name, strlen(name));
    bool    not_utf8  = !checked && unchecked;
    json_decref(checked);
    json_decref(unchecked);
    if (!not_utf8)
        return header_no_memory();
    char s[KILN__SHAPE_STR];
    return kiln__error(KILN_ERR_INVALID_ARG,
                       "kiln_save: the name of parameter %zu %s is "
                       "not UTF-8, which the JSON of a safetensors header must be",
                       index, kiln__shape_str(s, t->node.ndim, t->node.dims));
}

/* What a file holds: tensors under their names, in order, stored as
 * dtype (f32; kiln_save_as may store parameters as f16 or bf16). */
typedef struct saved {
    kiln__named *list;
    size_t       n;
    kiln_dtype   dtype;
} saved;

/* The bytes tensor t takes in the file. */
static uint64_t stored_bytes(const saved *sv, const kiln_tensor *t)
{
    return (uint64_t)t->node.numel * kiln__elem_size(sv->dtype);
}

static void saved_free(saved *sv)
{
    kiln__named_free(sv->list, sv->n);
    memset(sv, 0, sizeof *sv);
}

/* g's parameters, in creation order, under their own names; with
 * optimiser, its state after them (optim.c). */
static kiln_status saved_of(const kiln_graph *g, bool optimiser, saved *sv, const char **kind,
                            uint64_t *step)
{
    memset(sv, 0, sizeof *sv);
    return kiln__state_list(g, optimiser, &sv->list, &sv->n, kind, step);
}

/* One member of the header for each tensor of sv, in order. */
static kiln_status add_params(const saved *sv, json_t *root)
{
    uint64_t offset = 0;
    size_t   index  = 0;
    for (size_t i = 0; i < sv->n; i++) {
        const kiln_tensor *t = sv->list[i].t;
        const char        *name = sv->list[i].name;
        char               s[KILN__SHAPE_STR];
        if (!name)
            return kiln__error(KILN_ERR_INVALID_ARG,
                               "kiln_save: parameter %zu %s has "
                               "no name; weight files identify tensors by name",
                               index, kiln__shape_str(s, t->node.ndim, t->node.dims));
        if (strcmp(name, "__metadata__") == 0)
            return kiln__error(KILN_ERR_INVALID_ARG,
                               "kiln_save: parameter %zu %s is "
                               "named __metadata__, which safetensors keeps for the "
                               "file's metadata",
                               index, kiln__shape_str(s, t->node.ndim, t->node.dims));
        uint64_t size  = stored_bytes(sv, t);
        json_t  *entry = tensor_entry(t, sv->dtype, offset, offset + size);
        if (!entry)
            return header_no_memory();
        if (json_object_set_new(root, name, entry) != 0)
            return name_refused(name, t, index);
        offset += size;
        index++;
    }
    return KILN_OK;
}

/* The header of g's parameters as compact JSON, "__metadata__" first, then the
 * parameters in creation order (Jansson keeps objects in insertion order), in
 * a string from malloc. */
static kiln_status build_header(const kiln_graph *g, const saved *sv, const char *kind,
                                uint64_t step, char **out)
{
    json_t *root = json_object(), *meta = json_object();
    bool    ok = root && meta &&
              json_object_set_new(meta, "producer",
                                  json_sprintf("kiln %s", kiln_version())) == 0 &&
              (!g->meta || json_object_update(meta, g->meta) == 0) &&
              (!kind ||
               (json_object_set_new(meta, "kiln.optim.kind", json_string(kind)) == 0 &&
                json_object_set_new(meta, "kiln.optim.step",
                                    json_sprintf("%llu", (unsigned long long)step)) ==
                    0)) &&
              /* a checkpoint of a loss-scaled run goes on at its scale */
              (!kind || !g->scale.on ||
               json_object_set_new(meta, "kiln.loss_scale",
                                   json_sprintf("%.9g %d %llu", (double)g->scale.value,
                                                g->scale.good,
                                                (unsigned long long)g->scale.skipped)) ==
                   0) &&
              json_object_set(root, "__metadata__", meta) == 0;
    kiln_status st = ok ? KILN_OK : header_no_memory();
    if (st == KILN_OK)
        st = add_params(sv, root);
    if (st == KILN_OK && !(*out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER)))
        st = kiln__error(KILN_ERR_NO_MEMORY, "kiln_save: out of memory writing the "
                                             "header as JSON");
    json_decref(meta);
    json_decref(root);
    return st;
}

/* ---- metadata -------------------------------------------------------------------- */

static void meta_free(kiln_graph *g)
{
    json_decref(g->meta);
    g->meta = NULL;
}

/* A key or value as a JSON string: it must be valid UTF-8 without NUL
 * (Jansson's json_string checks), and a key must not be empty. */
static kiln_status meta_string(const char *what, const char *s, json_t **out)
{
    if (!s)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_set_meta: %s is NULL", what);
    if (!*s && strcmp(what, "key") == 0)
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_graph_set_meta: the key is empty: expected a name");
    *out = json_string(s);
    if (*out)
        return KILN_OK;
    /* NULL for text that is not UTF-8, or for no memory: tell them apart */
    json_t *probe = json_string("");
    if (!probe)
        return kiln__error(KILN_ERR_NO_MEMORY, "kiln_graph_set_meta: out of memory");
    json_decref(probe);
    return kiln__error(KILN_ERR_INVALID_ARG,
                       "kiln_graph_set_meta: the %s \"%.40s\" is not valid UTF-8: "
                       "safetensors metadata is JSON text",
                       what, s);
}

KILN_API kiln_status kiln_graph_set_meta(kiln_graph *g, const char *key,
                                         const char *value)
{
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_set_meta: graph is NULL");
    json_t     *k = NULL, *v = NULL;
    kiln_status st = meta_string("key", key, &k);
    if (st == KILN_OK && !value) { /* removes the key */
        json_decref(k);
        if (g->meta)
            json_object_del(g->meta, key);
        return KILN_OK;
    }
    if (st == KILN_OK)
        st = meta_string("value", value, &v);
    json_decref(k);
    if (st == KILN_OK && !g->meta) {
        g->meta = json_object();
        if (g->meta)
            kiln__graph_on_free(g, meta_free);
        else
            st = kiln__error(KILN_ERR_NO_MEMORY, "kiln_graph_set_meta: out of memory");
    }
    if (st == KILN_OK && json_object_set_new(g->meta, key, v) != 0) {
        v  = NULL; /* json_object_set_new released it */
        st = kiln__error(KILN_ERR_NO_MEMORY, "kiln_graph_set_meta: out of memory");
    }
    if (st != KILN_OK)
        json_decref(v);
    return st;
}

/* ---- saving: where the file goes ---------------------------------------------- */

/* Symbolic links followed before kiln_save gives up, as the kernel does. */
#define LINKS_MAX 40

/* What kiln_save writes: the file that path names once its symbolic links are
 * followed, and what is there now. */
typedef struct target {
    char       *path; /* malloc'd */
    bool        exists;
    struct stat st; /* when it exists */
} target;

/* The name a symbolic link at `link` points to, as a path: a relative one
 * is taken from the link's folder. NULL after an error. */
static char *link_target(const char *path, const char *link)
{
    char    to[4096];
    ssize_t n = readlink(link, to, sizeof to);
    if (n < 0 || (size_t)n == sizeof to) {
        kiln__error(KILN_ERR_IO,
                    "kiln_save: cannot write %s: reading the symbolic link %s: %s", path,
                    link, n < 0 ? strerror(errno) : "its target is too long");
        return NULL;
    }
    const char *slash = to[0] == '/' ? NULL : strrchr(link, '/');
    size_t      dir   = slash ? (size_t)(slash - link) + 1 : 0;
    char       *next  = kiln__malloc(dir + (size_t)n + 1, "a file name");
    if (next) {
        memcpy(next, link, dir);
        memcpy(next + dir, to, (size_t)n);
        next[dir + (size_t)n] = '\0';
    }
    return next;
}

/* Follows path's symbolic links to the file a save must replace, which need
 * not exist yet (a dangling link names the file to create). */
static kiln_status resolve(const char *path, target *t)
{
    char *cur = kiln__strdup(path, "a file name");
    for (int links = 0; cur; links++) {
        if (lstat(cur, &t->st) != 0) {
            if (errno != ENOENT) {
                kiln_status st = kiln__error(KILN_ERR_IO,
                                             "kiln_save: cannot write %s: %s", cur,
                                             strerror(errno));
                free(cur);
                return st;
            }
            t->path = cur; /* a new file; a missing folder fails at create */
            return KILN_OK;
        }
        if (!S_ISLNK(t->st.st_mode)) {
            t->path   = cur;
            t->exists = true;
            return KILN_OK;
        }
        if (links == LINKS_MAX) {
            free(cur);
            return kiln__error(KILN_ERR_IO,
                               "kiln_save: cannot write %s: more than %d symbolic links "
                               "(a loop?)",
                               path, LINKS_MAX);
        }
        char *next = link_target(path, cur);
        free(cur);
        cur = next;
    }
    return KILN_ERR_NO_MEMORY; /* kiln__malloc said so */
}

/* Only a regular file is replaced: a device, a FIFO or a folder is not
 * what a save should turn into a file. */
static kiln_status check_target(const char *path, const target *t)
{
    if (!t->exists || S_ISREG(t->st.st_mode))
        return KILN_OK;
    if (strcmp(path, t->path) != 0)
        return kiln__error(KILN_ERR_IO,
                           "kiln_save: %s is %s (the target of the symbolic link %s), "
                           "expected a regular file or the name of a new one",
                           t->path, kiln__file_kind(t->st.st_mode), path);
    return kiln__error(KILN_ERR_IO,
                       "kiln_save: %s is %s, expected a regular file or the name of a "
                       "new one",
                       path, kiln__file_kind(t->st.st_mode));
}

/* A file past RLIMIT_FSIZE gets SIGXFSZ, which ends the process by default
 * with the temporary file half written: refused before it is begun. */
static kiln_status check_size_limit(const char *path, uint64_t size)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        size <= (uint64_t)rl.rlim_cur)
        return KILN_OK;
    return kiln__error(KILN_ERR_IO,
                       "kiln_save: %s would be %llu bytes, more than this process may "
                       "write: %llu bytes (RLIMIT_FSIZE; see ulimit -f)",
                       path, (unsigned long long)size, (unsigned long long)rl.rlim_cur);
}

/* A new file beside the target, in its folder (so that the rename stays
 * within one file system), created with the umask's permissions. */
static FILE *open_temp(const char *path, char *tmp, size_t tmp_len)
{
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, tmp_len, "%s.tmp-%ld-%u", path, (long)getpid(), attempt);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            break;
        FILE *f = fdopen(fd, "wb");
        if (f)
            return f;
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        break;
    }
    kiln__error(KILN_ERR_IO, "kiln_save: cannot write %s: creating %s beside it: %s",
                path, tmp, strerror(errno));
    return NULL;
}

/* The replaced file's permissions, and its owner where this process may
 * give a file away (root); set-id bits are not carried over. */
static kiln_status keep_mode(const target *t, FILE *f, const char *tmp)
{
    if (!t->exists)
        return KILN_OK;
    struct stat now;
    int         fd = fileno(f);
    if (fstat(fd, &now) == 0 &&
        (now.st_uid != t->st.st_uid || now.st_gid != t->st.st_gid))
        (void)!fchown(fd, t->st.st_uid, t->st.st_gid); /* EPERM: ours, as before */
    if (fchmod(fd, t->st.st_mode & 0777) != 0)
        return kiln__error(KILN_ERR_IO, "kiln_save: giving %s the mode %o of %s: %s", tmp,
                           (unsigned)(t->st.st_mode & 0777), t->path, strerror(errno));
    return KILN_OK;
}

/* ---- saving: the file --------------------------------------------------------- */

/* n 16-bit values to little-endian bytes, in place. */
static void u16_to_le(uint16_t *v, size_t n)
{
    unsigned char *b = (unsigned char *)v;
    for (size_t i = 0; i < n; i++) {
        uint16_t u   = v[i];
        b[2 * i]     = (unsigned char)(u & 0xff);
        b[2 * i + 1] = (unsigned char)(u >> 8);
    }
}

/* n little-endian 16-bit values to host order, in place. */
static void u16_from_le(uint16_t *v, size_t n)
{
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < n; i++)
        v[i] = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
}

/* Every tensor's value, little-endian, in order, rounded to the file's
 * type. */
static kiln_status write_data(const saved *sv, FILE *f, const char *tmp)
{
    for (size_t i = 0; i < sv->n; i++) {
        const kiln_tensor *t = sv->list[i].t;
        size_t             n = kiln__tensor_bytes(t), out = (size_t)stored_bytes(sv, t);
        float *v = kiln__malloc(n, "a parameter's value");
        if (!v)
            return KILN_ERR_NO_MEMORY;
        kiln_status st = kiln_tensor_read(t, v, n);
        if (st == KILN_OK) {
            size_t count = (size_t)t->node.numel;
            if (sv->dtype == KILN_F32) {
                f32_to_le(v, v, count);
            } else { /* narrowed in place, as kiln_convert allows */
                kiln_convert(v, sv->dtype, v, KILN_F32, count);
                u16_to_le((uint16_t *)v, count);
            }
            if (fwrite(v, 1, out, f) != out)
                st = kiln__error(KILN_ERR_IO, "kiln_save: writing %s: %s", tmp,
                                 strerror(errno));
        } else {
            st = kiln__error(st, "kiln_save: %s", kiln_last_error());
        }
        free(v);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

/* The bytes of every tensor. */
static uint64_t data_bytes(const saved *sv)
{
    uint64_t n = 0;
    for (size_t i = 0; i < sv->n; i++)
        n += stored_bytes(sv, sv->list[i].t);
    return n;
}

/* The file into a temporary file in t's folder, renamed over t once whole;
 * every failure removes the temporary file. */
static kiln_status write_file(const saved *sv, const target *t, const char *h)
{
    size_t tmp_len = strlen(t->path) + 48;
    char  *tmp     = kiln__malloc(tmp_len, "a file name");
    FILE  *f       = tmp ? open_temp(t->path, tmp, tmp_len) : NULL;
    if (!f) {
        free(tmp);
        return tmp ? KILN_ERR_IO : KILN_ERR_NO_MEMORY;
    }
    /* Spaces pad the header so that the data starts 8-byte aligned. */
    size_t        h_len = strlen(h), pad = (8 - h_len % 8) % 8;
    unsigned char len[8];
    kiln_status   st = keep_mode(t, f, tmp); /* before the data is in it */
    put_u64le(len, h_len + pad);
    if (st == KILN_OK && (fwrite(len, 1, 8, f) != 8 || fwrite(h, 1, h_len, f) != h_len ||
                          fwrite("        ", 1, pad, f) != pad))
        st = kiln__error(KILN_ERR_IO, "kiln_save: writing %s: %s", tmp, strerror(errno));
    if (st == KILN_OK)
        st = write_data(sv, f, tmp);
    /* The data reaches the disk before the rename makes it the file. */
    if (st == KILN_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = kiln__error(KILN_ERR_IO, "kiln_save: writing %s: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && st == KILN_OK)
        st = kiln__error(KILN_ERR_IO, "kiln_save: closing %s: %s", tmp, strerror(errno));
    if (st == KILN_OK && rename(tmp, t->path) != 0)
        st = kiln__error(KILN_ERR_IO, "kiln_save: renaming %s to %s: %s", tmp, t->path,
                         strerror(errno));
    if (st != KILN_OK)
        unlink(tmp);
    free(tmp);
    return st;
}

/* kiln_save_as, and with optimiser kiln_checkpoint_save. */
static kiln_status save(const kiln_graph *g, const char *path, bool optimiser,
                        kiln_dtype dtype)
{
    const char *call = optimiser ? "kiln_checkpoint_save" : "kiln_save";
    if (!g || !path)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: %s is NULL", call,
                           g ? "path" : "graph");
    if (!kiln__is_float(dtype))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_save_as: dtype %s (%d), expected KILN_F32, KILN_F16 or "
                           "KILN_BF16",
                           kiln_dtype_name(dtype), (int)dtype);
    char       *h    = NULL;
    target      t    = {0};
    saved       sv   = {0};
    const char *kind = NULL;
    uint64_t    step = 0;
    kiln_status st   = saved_of(g, optimiser, &sv, &kind, &step);
    sv.dtype         = dtype;
    if (st == KILN_OK)
        st = build_header(g, &sv, optimiser ? kind : NULL, step, &h);
    if (st == KILN_OK)
        st = resolve(path, &t);
    if (st == KILN_OK)
        st = check_target(path, &t);
    if (st == KILN_OK) {
        size_t h_len = strlen(h);
        st = check_size_limit(path, 8 + h_len + (8 - h_len % 8) % 8 + data_bytes(&sv));
    }
    if (st == KILN_OK)
        st = write_file(&sv, &t, h);
    free(t.path);
    free(h);
    saved_free(&sv);
    return st;
}

KILN_API kiln_status kiln_save(const kiln_graph *g, const char *path)
{
    return save(g, path, false, KILN_F32);
}

KILN_API kiln_status kiln_save_as(const kiln_graph *g, const char *path, kiln_dtype dtype)
{
    return save(g, path, false, dtype);
}

KILN_API kiln_status kiln_checkpoint_save(const kiln_graph *g, const char *path)
{
    return save(g, path, true, KILN_F32);
}

/* ---- loading: the header ------------------------------------------------------ */

/* Jansson parses the header, refusing duplicate keys and \u0000 in strings.
 * kiln refuses the rest of what safetensors does not use: every value has a
 * type checked below, and a number must be an integer (JSON_INTEGER), never
 * a fraction, an exponent, true, false or null. */
#define LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

/* Nesting deeper than this is refused before Jansson sees the header, so that
 * a hostile one cannot make it recurse 2048 levels (its own limit). A
 * safetensors header is 3 deep. */
#define DEPTH_MAX 32

/* A tensor the header describes. */
typedef struct entry {
    const char   *name; /* a key of the header */
    const char   *dtype;
    const json_t *shape; /* an array of integers >= 0 */
    uint64_t      begin, end;
} entry;

typedef struct file {
    const char *call; /* "kiln_load", "kiln_file_meta": for messages */
    const char *path;
    FILE       *f;
    uint64_t    header_len, data_len;
    json_t     *header;
    entry      *entries;
    size_t      n_entries;
} file;

static kiln_status malformed(const file *fl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static kiln_status malformed(const file *fl, const char *fmt, ...)
{
    char    what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return kiln__error(KILN_ERR_IO, "%s: %s is not a valid safetensors file: %s",
                       fl->call, fl->path, what);
}

static size_t dtype_size(const char *dtype)
{
    static const struct {
        const char *name;
        size_t      size;
    } dtypes[] = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
        {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
        {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8},
    };
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtype, dtypes[i].name) == 0)
            return dtypes[i].size;
    return 0;
}

/* "an object", "an integer", ... for messages. */
static const char *type_name(json_type type)
{
    switch (type) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number that is not an integer";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* "[2, 3]" for a shape array of the header. */
static const char *json_shape_str(char *buf, const json_t *shape)
{
    int64_t dims[16];
    size_t  n = json_array_size(shape);
    if (n > 16) {
        snprintf(buf, KILN__SHAPE_STR, "(%zu dimensions)", n);
        return buf;
    }
    for (size_t i = 0; i < n; i++)
        dims[i] = json_integer_value(json_array_get(shape, i));
    return kiln__shape_str(buf, (int)n, dims);
}

/* Member key of tensor name's entry e, of the given type. */
static json_t *member(const file *fl, const char *name, const json_t *e, const char *key,
                      json_type type, kiln_status *st)
{
    json_t *m = json_object_get(e, key);
    if (!m)
        *st = malformed(fl, "tensor \"%s\" has no \"%s\"", name, key);
    else if (json_typeof(m) != type)
        *st = malformed(fl, "tensor \"%s\": \"%s\" is %s, expected %s", name, key,
                        type_name(json_typeof(m)), type_name(type));
    return *st == KILN_OK ? m : NULL;
}

/* Fills en from member name of the header, checking it is self-consistent. */
static kiln_status parse_entry(const file *fl, const char *name, json_t *e, entry *en)
{
    kiln_status st = KILN_OK;
    if (!json_is_object(e))
        return malformed(fl, "tensor \"%s\" is %s, expected an object", name,
                         type_name(json_typeof(e)));
    json_t *dtype = member(fl, name, e, "dtype", JSON_STRING, &st);
    json_t *shape = dtype ? member(fl, name, e, "shape", JSON_ARRAY, &st) : NULL;
    json_t *offs  = shape ? member(fl, name, e, "data_offsets", JSON_ARRAY, &st) : NULL;
    if (st != KILN_OK)
        return st;
    const char *key;
    json_t     *value;
    json_object_foreach(
        e, key,
        value) if (strcmp(key, "dtype") && strcmp(key, "shape") &&
                   strcmp(key, "data_offsets")) return malformed(fl,
                                                                 "tensor \"%s\" has an "
                                                                 "unknown member \"%s\"",
                                                                 name, key);
    size_t size = dtype_size(json_string_value(dtype));
    if (!size)
        return malformed(fl, "tensor \"%s\" has an unknown dtype \"%s\"", name,
                         json_string_value(dtype));
    uint64_t numel = 1;
    for (size_t i = 0; i < json_array_size(shape); i++) {
        const json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return malformed(fl,
                             "tensor \"%s\": shape element %zu is not an integer >= 0 "
                             "(it is %s)",
                             name, i,
                             json_is_integer(d) ? "negative" : type_name(json_typeof(d)));
        uint64_t n = (uint64_t)json_integer_value(d);
        if (n && numel > fl->data_len / n)
            return malformed(fl,
                             "tensor \"%s\": its shape holds more elements than the "
                             "file has bytes",
                             name);
        numel *= n;
    }
    const json_t *first = json_array_get(offs, 0), *last = json_array_get(offs, 1);
    if (json_array_size(offs) != 2 || !json_is_integer(first) || !json_is_integer(last))
        return malformed(fl,
                         "tensor \"%s\": data_offsets is not [begin, end] (two "
                         "integers)",
                         name);
    int64_t begin = json_integer_value(first), end = json_integer_value(last);
    if (begin < 0 || end < begin || (uint64_t)end > fl->data_len)
        return malformed(fl,
                         "tensor \"%s\": data_offsets [%lld, %lld] outside the "
                         "%llu bytes of data",
                         name, (long long)begin, (long long)end,
                         (unsigned long long)fl->data_len);
    char s[KILN__SHAPE_STR];
    if ((uint64_t)(end - begin) != numel * size)
        return malformed(fl,
                         "tensor \"%s\": data_offsets [%lld, %lld] hold %lld bytes, "
                         "but %s %s takes %llu",
                         name, (long long)begin, (long long)end, (long long)(end - begin),
                         json_string_value(dtype), json_shape_str(s, shape),
                         (unsigned long long)(numel * size));
    *en = (entry){name, json_string_value(dtype), shape, (uint64_t)begin, (uint64_t)end};
    return KILN_OK;
}

static int by_offset(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* The tensors must tile the data exactly. Leaves the entries sorted by name
 * (which differ: Jansson refused duplicate keys). */
static kiln_status check_layout(const file *fl)
{
    qsort(fl->entries, fl->n_entries, sizeof *fl->entries, by_offset);
    uint64_t at = 0;
    for (size_t i = 0; i < fl->n_entries; i++) {
        const entry *e = &fl->entries[i];
        if (e->begin != at)
            return malformed(fl,
                             "tensor \"%s\" starts at data byte %llu, but the "
                             "tensors before it end at %llu (they must be packed)",
                             e->name, (unsigned long long)e->begin,
                             (unsigned long long)at);
        at = e->end;
    }
    if (at != fl->data_len)
        return malformed(fl,
                         "the tensors end at data byte %llu, but the file has %llu "
                         "bytes of data",
                         (unsigned long long)at, (unsigned long long)fl->data_len);
    qsort(fl->entries, fl->n_entries, sizeof *fl->entries, by_name);
    return KILN_OK;
}

static kiln_status check_metadata(const file *fl, json_t *m)
{
    if (!json_is_object(m))
        return malformed(fl, "__metadata__ is %s, expected an object",
                         type_name(json_typeof(m)));
    const char *key;
    json_t     *value;
    json_object_foreach(m, key, value) if (!json_is_string(value)) return malformed(
        fl, "__metadata__ \"%s\" is %s, expected a string", key,
        type_name(json_typeof(value)));
    return KILN_OK;
}

/* The offset of the first bracket outside strings that opens a level deeper
 * than DEPTH_MAX, or len when none does. Brackets are counted as Jansson
 * nests: it fails at the first string it cannot read, and until then it is
 * inside a string exactly where this scan is. */
static size_t too_deep(const char *json, size_t len)
{
    int  depth     = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = json[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > DEPTH_MAX)
                return i;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return len;
}

/* Whether json[i] follows an odd number of backslashes, counting back to lo. */
static bool escaped(const char *json, size_t i, size_t lo)
{
    size_t n = 0;
    while (i > lo && json[i - 1] == '\\') {
        i--;
        n++;
    }
    return n % 2;
}

/* Where the token before json[pos] begins, for a token Jansson did not quote:
 * a string's opening quote, else after the last space or bracket, colon or
 * comma; at most 64 bytes back. */
static size_t token_start(const char *json, size_t pos)
{
    size_t lo = pos > 64 ? pos - 64 : 0;
    if (pos >= 2 && json[pos - 1] == '"' && !escaped(json, pos - 1, lo))
        for (size_t i = pos - 1; i-- > lo;)
            if (json[i] == '"' && !escaped(json, i, lo))
                return i;
    size_t from = lo;
    for (size_t i = lo; i < pos; i++)
        if ((unsigned char)json[i] <= ' ' || strchr(",:[]{}", json[i]))
            from = i + 1;
    while (from < pos && ((unsigned char)json[from] & 0xC0) == 0x80)
        from++; /* not from inside a UTF-8 character */
    return from;
}

/* Where a Jansson parse error is, and the header text there.
 *
 * Jansson's position counts the bytes it had read when it failed, and its
 * message ends in "near '<token>'" with what it had just read, when that is
 * at most 20 bytes: the error is at byte position - (its length), where the
 * quoted text begins, as kiln's messages said before. At the end of the text
 * ("near end of file") it is the position. After a longer token, kiln quotes
 * the token itself (token_start). *what_len is the length of Jansson's
 * message without its "near". */
static size_t error_at(const json_error_t *err, const char *json, size_t len,
                       int *what_len, char *quote, size_t quote_len)
{
    size_t      pos  = err->position > 0 ? (size_t)err->position : 0;
    const char *near = strstr(err->text, " near ");
    size_t      n    = near ? strlen(near) : 0;
    *what_len        = (int)(near ? (size_t)(near - err->text) : strlen(err->text));
    if (near) {
        snprintf(quote, quote_len, "%s", near);
        bool token = n >= 8 && strncmp(near, " near '", 7) == 0 && near[n - 1] == '\'';
        return token && n - 8 <= pos ? pos - (n - 8) : pos;
    }
    quote[0] = '\0';
    if (pos > len)
        return pos;
    size_t from = token_start(json, pos);
    if (from < pos)
        snprintf(quote, quote_len, " near '%.*s'", (int)(pos - from), json + from);
    return from;
}

/* A Jansson parse error as "header at byte N: what near 'text'", in kiln's
 * words where Jansson's would puzzle a user of kiln. */
/* Whether Jansson failed for want of memory. It says so in three ways: no
 * message at all (a value, an array's or an object's table, its own
 * buffers), json_error_out_of_memory, or, when the copy of a string cannot
 * be allocated, as if the string were a bad token: "invalid token" (a
 * value) or "string or '}' expected" (a key), just after the string's
 * closing quote. A string Jansson could not read for its text is reported
 * as what is wrong with it (an escape, a control character, the end of the
 * input) and numbers, words and other characters never end in a quote, so
 * those two messages after a quote mean memory. *string says which. */
static bool out_of_memory(const json_error_t *err, const char *json, size_t len,
                          bool *string)
{
    enum json_error_code code = json_error_code(err);
    size_t               pos  = err->position > 0 ? (size_t)err->position : 0;
    *string = code == json_error_invalid_syntax && pos >= 2 && pos <= len &&
              json[pos - 1] == '"' &&
              (strncmp(err->text, "invalid token", 13) == 0 ||
               strncmp(err->text, "string or '}' expected", 22) == 0);
    return !err->text[0] || code == json_error_out_of_memory || *string;
}

static kiln_status parse_failed(const file *fl, const char *json, size_t len,
                                const json_error_t *err)
{
    bool string;
    if (out_of_memory(err, json, len, &string))
        return string ? kiln__error(KILN_ERR_NO_MEMORY,
                                    "%s: out of memory parsing the header of %s "
                                    "(%zu bytes of JSON): Jansson could not copy the "
                                    "string ending at byte %d",
                                    fl->call, fl->path, len, err->position)
                      : kiln__error(KILN_ERR_NO_MEMORY,
                                    "%s: out of memory parsing the header of %s "
                                    "(%zu bytes of JSON) into Jansson's values",
                                    fl->call, fl->path, len);
    enum json_error_code code = json_error_code(err);
    char                 quote[JSON_ERROR_TEXT_LENGTH + 64];
    int                  what_len;
    size_t               at   = error_at(err, json, len, &what_len, quote, sizeof quote);
    const char          *what = err->text, *hint = "";
    if (code == json_error_null_character) { /* "... without JSON_ALLOW_NUL" */
        what     = "\\u0000 is not allowed in a string";
        what_len = (int)strlen(what);
    } else if (code == json_error_numeric_overflow) {
        hint = " (outside the 64-bit range)";
    } else if (code == json_error_invalid_syntax && at < len) {
        const char *t = json + at, *end = json + len;
        t += *t == '-';
        if (end - t >= 2 && t[0] == '0' && t[1] >= '0' && t[1] <= '9')
            hint = " (a number with a leading zero)"; /* Jansson: "invalid token" */
    }
    return malformed(fl, "header at byte %zu: %.*s%s%s", at, what_len, what, quote, hint);
}

static kiln_status parse_header(file *fl, const char *json)
{
    size_t       len  = (size_t)fl->header_len;
    size_t       deep = too_deep(json, len);
    json_error_t err;
    if (deep < len)
        return malformed(fl, "header at byte %zu: nesting deeper than %d levels", deep,
                         DEPTH_MAX);
    fl->header = json_loadb(json, len, LOAD_FLAGS, &err);
    if (!fl->header)
        return parse_failed(fl, json, len, &err);
    json_t *root = fl->header;
    if (!json_is_object(root))
        return malformed(fl, "the header is %s, expected an object",
                         type_name(json_typeof(root)));
    fl->entries = kiln__calloc(json_object_size(root), sizeof *fl->entries,
                               "safetensors entries");
    if (!fl->entries)
        return KILN_ERR_NO_MEMORY;
    const char *key;
    json_t     *value;
    json_object_foreach(root, key, value)
    {
        kiln_status st = strcmp(key, "__metadata__") == 0
                             ? check_metadata(fl, value)
                             : parse_entry(fl, key, value, &fl->entries[fl->n_entries++]);
        if (st != KILN_OK)
            return st;
    }
    return check_layout(fl);
}

static kiln_status read_at(const file *fl, uint64_t offset, void *buf, size_t n)
{
    if (fseeko(fl->f, (off_t)offset, SEEK_SET) != 0)
        return kiln__error(KILN_ERR_IO, "%s: seeking in %s: %s", fl->call, fl->path,
                           strerror(errno));
    size_t got = fread(buf, 1, n, fl->f);
    if (got == n)
        return KILN_OK;
    if (ferror(fl->f))
        return kiln__error(KILN_ERR_IO, "%s: reading %s: %s", fl->call, fl->path,
                           strerror(errno));
    return kiln__error(KILN_ERR_IO,
                       "%s: %s ended after %llu bytes; expected %zu "
                       "more from byte %llu (was it changed while being read?)",
                       fl->call, fl->path, (unsigned long long)(offset + got), n - got,
                       (unsigned long long)offset);
}

static kiln_status open_file(file *fl)
{
    int         fd;
    uint64_t    size;
    kiln_status st = kiln__open_regular(fl->path, "weights file", &fd, &size);
    if (st != KILN_OK)
        return kiln__error(st, "%s: %s", fl->call, kiln_last_error());
    fl->f = fdopen(fd, "rb");
    if (!fl->f) {
        close(fd);
        return kiln__error(KILN_ERR_NO_MEMORY, "%s: out of memory opening %s", fl->call,
                           fl->path);
    }
    unsigned char len[8];
    if (size < 8)
        return malformed(fl,
                         "it has %llu bytes; the file starts with an 8-byte header "
                         "length",
                         (unsigned long long)size);
    st = read_at(fl, 0, len, 8);
    if (st != KILN_OK)
        return st;
    fl->header_len = get_u64le(len);
    if (fl->header_len < 2 || fl->header_len > size - 8)
        return malformed(fl,
                         "the header length is %llu, but it must be at least 2 and the "
                         "file has %llu bytes after the length",
                         (unsigned long long)fl->header_len,
                         (unsigned long long)(size - 8));
    if (fl->header_len > HEADER_MAX)
        return kiln__error(KILN_ERR_IO,
                           "%s: %s: the header length is %llu bytes, more than "
                           "kiln reads (%llu bytes, 16 MiB)",
                           fl->call, fl->path, (unsigned long long)fl->header_len,
                           (unsigned long long)HEADER_MAX);
    fl->data_len = size - 8 - fl->header_len;
    char *json   = kiln__malloc((size_t)fl->header_len, "a safetensors header");
    if (!json)
        return kiln__error(KILN_ERR_NO_MEMORY, "%s: %s: %s", fl->call, fl->path,
                           kiln_last_error());
    st = read_at(fl, 8, json, (size_t)fl->header_len);
    if (st == KILN_OK)
        st = parse_header(fl, json);
    free(json);
    return st;
}

/* ---- loading: the parameters -------------------------------------------------- */

/* The entry for parameter t, which must exist as F32 of t's shape. */
static kiln_status match_param(const file *fl, const kiln__named *nt, const entry **found)
{
    char               s[KILN__SHAPE_STR], fs[KILN__SHAPE_STR];
    const kiln_tensor *t = nt->t;
    kiln__shape_str(s, t->node.ndim, t->node.dims);
    if (!nt->name)
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_load: a parameter %s has no "
                           "name; weight files identify tensors by name",
                           s);
    entry        key = {.name = nt->name};
    const entry *e   = bsearch(&key, fl->entries, fl->n_entries, sizeof *fl->entries,
                               by_name);
    if (!e)
        return kiln__error(KILN_ERR_NOT_FOUND,
                           "kiln_load: %s has no tensor \"%s\" for "
                           "%s %s (the file holds %zu tensors)",
                           fl->path, nt->name,
                           (t->flags & KILN__PARAM) ? "the parameter of that name"
                                                    : "the optimiser's state",
                           s, fl->n_entries);
    if (strcmp(e->dtype, "F32") != 0 && strcmp(e->dtype, "F16") != 0 &&
        strcmp(e->dtype, "BF16") != 0)
        return kiln__error(KILN_ERR_SHAPE,
                           "kiln_load: %s: tensor \"%s\" is %s; kiln "
                           "reads F32, F16 and BF16 into its f32 parameters (convert "
                           "the file, e.g. with tensor.float() in PyTorch)",
                           fl->path, nt->name, e->dtype);
    bool same = json_array_size(e->shape) == (size_t)t->node.ndim;
    for (int d = 0; same && d < t->node.ndim; d++)
        same = json_integer_value(json_array_get(e->shape, (size_t)d)) == t->node.dims[d];
    if (!same)
        return kiln__error(KILN_ERR_SHAPE,
                           "kiln_load: %s: tensor \"%s\" is %s in the "
                           "file but %s in the graph",
                           fl->path, nt->name, json_shape_str(fs, e->shape), s);
    *found = e;
    return KILN_OK;
}

/* Checks every tensor of sv against the file and reads them all, before any
 * is written, so that a failed load leaves the graph as it was. */
static kiln_status load_params(const saved *sv, const file *fl)
{
    size_t total = 0;
    for (size_t i = 0; i < sv->n; i++) {
        const entry *e;
        kiln_status  st = match_param(fl, &sv->list[i], &e);
        if (st != KILN_OK)
            return st;
        total += kiln__tensor_bytes(sv->list[i].t);
    }
    float *values = kiln__malloc(total, "parameter values");
    if (!values)
        return KILN_ERR_NO_MEMORY;
    kiln_status st  = KILN_OK;
    size_t      pos = 0;
    for (size_t i = 0; st == KILN_OK && i < sv->n; i++) {
        const entry *e;
        size_t       n     = kiln__tensor_bytes(sv->list[i].t);
        size_t       count = (size_t)sv->list[i].t->node.numel;
        float       *at    = (float *)((char *)values + pos);
        st                 = match_param(fl, &sv->list[i], &e);
        kiln_dtype   type  = strcmp(e ? e->dtype : "F32", "F16") == 0    ? KILN_F16
                             : strcmp(e ? e->dtype : "F32", "BF16") == 0 ? KILN_BF16
                                                                          : KILN_F32;
        if (st == KILN_OK && type == KILN_F32) {
            st = read_at(fl, 8 + fl->header_len + e->begin, at, n);
            if (st == KILN_OK)
                f32_from_le(at, count);
        } else if (st == KILN_OK) { /* 16 bits each, widened */
            uint16_t *h = kiln__malloc(count * 2 + 2, "a 16-bit tensor");
            st = h ? read_at(fl, 8 + fl->header_len + e->begin, h, count * 2)
                   : KILN_ERR_NO_MEMORY;
            if (st == KILN_OK) {
                u16_from_le(h, count);
                st = kiln_convert(at, KILN_F32, h, type, count);
            }
            free(h);
        }
        pos += n;
    }
    pos = 0;
    for (size_t i = 0; st == KILN_OK && i < sv->n; i++) {
        size_t n = kiln__tensor_bytes(sv->list[i].t);
        st       = kiln__leaf_write(sv->list[i].t, (char *)values + pos, n);
        pos += n;
    }
    free(values);
    return st;
}

KILN_API kiln_status kiln_file_meta(const char *path, const char *key, char *value,
                                    size_t size)
{
    if (!path || !key || (!value && size))
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_file_meta: %s is NULL",
                           !path  ? "path"
                           : !key ? "key"
                                  : "value");
    file        fl = {.call = "kiln_file_meta", .path = path};
    kiln_status st = open_file(&fl);
    if (st == KILN_OK) {
        json_t     *meta = json_object_get(fl.header, "__metadata__");
        const char *text = json_string_value(json_object_get(meta, key));
        size_t      len  = text ? strlen(text) : 0;
        if (!text)
            st = kiln__error(KILN_ERR_NOT_FOUND,
                             "kiln_file_meta: %s has no metadata \"%s\"%s", path, key,
                             meta ? "" : " (it has no __metadata__ at all)");
        else if (len >= size)
            st = kiln__error(KILN_ERR_INVALID_ARG,
                             "kiln_file_meta: %s: metadata \"%s\" takes %zu bytes with "
                             "its NUL, more than the %zu given",
                             path, key, len + 1, size);
        else
            memcpy(value, text, len + 1);
    }
    if (fl.f)
        fclose(fl.f);
    json_decref(fl.header);
    free(fl.entries);
    return st;
}

/* The optimiser of a checkpoint: its kind must be g's, and its step count
 * a number. */
static kiln_status checkpoint_optimiser(const file *fl, const char *kind, uint64_t *step)
{
    json_t     *meta  = json_object_get(fl->header, "__metadata__");
    const char *their = json_string_value(json_object_get(meta, "kiln.optim.kind"));
    const char *count = json_string_value(json_object_get(meta, "kiln.optim.step"));
    if (!their || !count)
        return kiln__error(KILN_ERR_NOT_FOUND,
                           "kiln_checkpoint_load: %s is not a checkpoint: it has no "
                           "optimiser state (\"kiln.optim.kind\" in its metadata); "
                           "kiln_save's files load with kiln_load",
                           fl->path);
    if (strcmp(their, kind) != 0)
        return kiln__error(KILN_ERR_SHAPE,
                           "kiln_checkpoint_load: %s holds the state of optimiser "
                           "\"%s\", and the graph has %s%s%s",
                           fl->path, their, *kind ? "\"" : "", *kind ? kind : "none",
                           *kind ? "\"" : "");
    char *end;
    errno                   = 0;
    unsigned long long step_n = strtoull(count, &end, 10);
    if (errno || end == count || *end)
        return kiln__error(KILN_ERR_IO,
                           "kiln_checkpoint_load: %s: kiln.optim.step \"%s\" is not a "
                           "count of steps",
                           fl->path, count);
    *step = (uint64_t)step_n;
    return KILN_OK;
}

/* The loss scale of a checkpoint ("kiln.loss_scale": scale, good runs,
 * skipped runs), into g, which scales its loss; a file without one (or
 * with one out of range) leaves g's scale as it is. */
static void checkpoint_scale(const file *fl, kiln_graph *g)
{
    json_t     *meta = json_object_get(fl->header, "__metadata__");
    const char *text = json_string_value(json_object_get(meta, "kiln.loss_scale"));
    float       scale;
    int         good;
    unsigned long long skipped;
    if (text && sscanf(text, "%g %d %llu", &scale, &good, &skipped) == 3 &&
        scale >= 0x1p-24f && scale <= 0x1p24f && good >= 0) {
        g->scale.value   = scale;
        g->scale.good    = good < g->scale.interval ? good : 0;
        g->scale.skipped = skipped;
    }
}

/* kiln_load, and with optimiser kiln_checkpoint_load. */
static kiln_status load(kiln_graph *g, const char *path, bool optimiser)
{
    const char *call = optimiser ? "kiln_checkpoint_load" : "kiln_load";
    if (!g || !path)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: %s is NULL", call,
                           g ? "path" : "graph");
    file        fl   = {.call = call, .path = path};
    saved       sv   = {0};
    const char *kind = "";
    uint64_t    step = 0, theirs = 0;
    kiln_status st   = saved_of(g, optimiser, &sv, &kind, &step);
    if (st == KILN_OK)
        st = open_file(&fl);
    if (st == KILN_OK && optimiser)
        st = checkpoint_optimiser(&fl, kind, &theirs);
    if (st == KILN_OK)
        st = load_params(&sv, &fl);
    if (st == KILN_OK && optimiser)
        kiln__optim_set_step(g, theirs);
    if (st == KILN_OK && optimiser && g->scale.on)
        checkpoint_scale(&fl, g);
    if (fl.f)
        fclose(fl.f);
    json_decref(fl.header);
    free(fl.entries);
    saved_free(&sv);
    return st;
}

KILN_API kiln_status kiln_load(kiln_graph *g, const char *path)
{
    return load(g, path, false);
}

KILN_API kiln_status kiln_checkpoint_load(kiln_graph *g, const char *path)
{
    return load(g, path, true);
}
