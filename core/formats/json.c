/* core/formats/json.c — a strict parser for the JSON that safetensors headers use:
 * objects, arrays, strings (every escape, \u with surrogate pairs, to UTF-8)
 * and integers. Anything else (fractions, exponents, true/false/null, a
 * trailing comma, a raw control character, text after the value) is an error
 * naming the byte offset where it was found. Nesting is limited so that a
 * hostile header cannot exhaust the stack.
 */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32

typedef struct parser {
    const char *text;
    size_t      len, pos;
    char       *err;
    size_t      err_len;
    bool        failed;
} parser;

static bool fail(parser *p, size_t at, const char *what)
{
    if (!p->failed) {
        if (at < p->len)
            snprintf(p->err, p->err_len, "at byte %zu: %s, found '%c' (0x%02x)", at,
                     what, (unsigned char)p->text[at] >= 0x20 &&
                     (unsigned char)p->text[at] < 0x7f ? p->text[at] : '?',
                     (unsigned char)p->text[at]);
        else
            snprintf(p->err, p->err_len, "at byte %zu: %s, found the end of the text",
                     at, what);
        p->failed = true;
    }
    return false;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_space(parser *p)
{
    while (p->pos < p->len && is_space(p->text[p->pos]))
        p->pos++;
}

static bool expect(parser *p, char c, const char *what)
{
    skip_space(p);
    if (p->pos < p->len && p->text[p->pos] == c) {
        p->pos++;
        return true;
    }
    return fail(p, p->pos, what);
}

/* ---- strings ------------------------------------------------------------ */

typedef struct buffer {
    char  *data;
    size_t len, cap;
} buffer;

static bool buffer_put(buffer *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap  = b->cap ? b->cap : 32;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown)
            return false;
        b->data = grown;
        b->cap  = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static size_t utf8_encode(char *out, unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* \uXXXX at p->pos (after the backslash and 'u'), with its low surrogate when
 * it is a high one. A NUL is refused: names are C strings. */
static bool parse_unicode(parser *p, buffer *b)
{
    size_t at = p->pos - 2;
    int    hi = p->pos + 4 <= p->len ? hex4(p->text + p->pos) : -1;
    if (hi < 0)
        return fail(p, at, "expected four hex digits after \\u");
    p->pos += 4;
    unsigned long cp = (unsigned long)hi;
    if (hi >= 0xD800 && hi <= 0xDBFF) {
        int lo = p->pos + 6 <= p->len && p->text[p->pos] == '\\' &&
                 p->text[p->pos + 1] == 'u' ? hex4(p->text + p->pos + 2) : -1;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return fail(p, at, "expected a low surrogate \\uDC00-\\uDFFF after a high one");
        p->pos += 6;
        cp = 0x10000 + (((unsigned long)hi - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
    } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
        return fail(p, at, "a low surrogate without a high one before it");
    } else if (hi == 0) {
        return fail(p, at, "\\u0000 is not allowed in a string");
    }
    char   utf8[4];
    size_t n = utf8_encode(utf8, cp);
    return buffer_put(b, utf8, n) || fail(p, at, "out of memory");
}

static bool parse_escape(parser *p, buffer *b)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    size_t at = p->pos;
    if (++p->pos >= p->len)
        return fail(p, p->pos, "expected an escape after '\\'");
    char c = p->text[p->pos++];
    if (c == 'u')
        return parse_unicode(p, b);
    const char *e = c ? strchr(from, c) : NULL;
    if (!e)
        return fail(p, at + 1, "unknown escape (expected one of \\\" \\\\ \\/ \\b \\f "
                    "\\n \\r \\t \\u)");
    return buffer_put(b, &to[e - from], 1) || fail(p, at, "out of memory");
}

/* A string at p->pos (its opening quote), decoded into a new C string. */
static char *parse_string(parser *p)
{
    buffer b = { 0 };
    if (!expect(p, '"', "expected a string"))
        return NULL;
    for (;;) {
        size_t end = p->pos;
        while (end < p->len && p->text[end] != '"' && p->text[end] != '\\' &&
               (unsigned char)p->text[end] >= 0x20)
            end++;
        if (!buffer_put(&b, p->text + p->pos, end - p->pos)) {
            fail(p, p->pos, "out of memory");
            break;
        }
        p->pos = end;
        if (p->pos >= p->len) {
            fail(p, p->pos, "expected '\"' to close the string");
            break;
        }
        if (p->text[p->pos] == '"') {
            p->pos++;
            return b.data;
        }
        if (p->text[p->pos] != '\\') {
            fail(p, p->pos, "a control character inside a string (escape it)");
            break;
        }
        if (!parse_escape(p, &b))
            break;
    }
    free(b.data);
    return NULL;
}

/* ---- numbers, arrays, objects ---------------------------------------------- */

static bool parse_integer(parser *p, kiln__json *v)
{
    size_t start = p->pos;
    bool   neg   = p->text[p->pos] == '-';
    if (neg)
        p->pos++;
    if (p->pos >= p->len || p->text[p->pos] < '0' || p->text[p->pos] > '9')
        return fail(p, p->pos, "expected a digit");
    if (p->text[p->pos] == '0' && p->pos + 1 < p->len && p->text[p->pos + 1] >= '0' &&
        p->text[p->pos + 1] <= '9')
        return fail(p, start, "a number with a leading zero");
    uint64_t n = 0;
    for (; p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9'; p->pos++) {
        unsigned d = (unsigned)(p->text[p->pos] - '0');
        if (n > (UINT64_C(1) << 63) / 10 || n * 10 + d > (UINT64_C(1) << 63) - !neg)
            return fail(p, start, "an integer outside the 64-bit range");
        n = n * 10 + d;
    }
    if (p->pos < p->len && (p->text[p->pos] == '.' || p->text[p->pos] == 'e' ||
                            p->text[p->pos] == 'E'))
        return fail(p, p->pos, "a number that is not an integer");
    v->type    = KILN__JSON_INTEGER;
    v->integer = neg ? (int64_t)(0 - n) : (int64_t)n;
    return true;
}

static bool parse_value(parser *p, kiln__json *v, int depth);

static bool push_item(parser *p, kiln__json *v, size_t *cap, kiln__json **item)
{
    if (v->n_items == *cap) {
        size_t      n     = *cap ? 2 * *cap : 4;
        kiln__json *grown = realloc(v->items, n * sizeof *grown);
        if (!grown)
            return fail(p, p->pos, "out of memory");
        v->items = grown;
        *cap     = n;
    }
    *item = &v->items[v->n_items++];
    memset(*item, 0, sizeof **item);
    return true;
}

/* An array or an object at p->pos (its opening bracket). */
static bool parse_container(parser *p, kiln__json *v, int depth)
{
    bool   object = p->text[p->pos] == '{';
    char   close  = object ? '}' : ']';
    size_t cap    = 0;
    v->type = object ? KILN__JSON_OBJECT : KILN__JSON_ARRAY;
    if (depth >= MAX_DEPTH)
        return fail(p, p->pos, "nesting deeper than 32 levels");
    p->pos++;
    skip_space(p);
    if (p->pos < p->len && p->text[p->pos] == close) {
        p->pos++;
        return true;
    }
    for (;;) {
        kiln__json *item;
        if (!push_item(p, v, &cap, &item))
            return false;
        if (object) {
            skip_space(p);
            item->key_offset = p->pos;
            if (!(item->key = parse_string(p)) ||
                !expect(p, ':', "expected ':' after an object key"))
                return false;
        }
        if (!parse_value(p, item, depth + 1))
            return false;
        skip_space(p);
        if (p->pos < p->len && p->text[p->pos] == ',') {
            p->pos++;
            continue;
        }
        return expect(p, close, object ? "expected ',' or '}' in an object"
                                       : "expected ',' or ']' in an array");
    }
}

static bool parse_value(parser *p, kiln__json *v, int depth)
{
    skip_space(p);
    v->offset = p->pos;
    if (p->pos >= p->len)
        return fail(p, p->pos, "expected a value");
    char c = p->text[p->pos];
    if (c == '{' || c == '[')
        return parse_container(p, v, depth);
    if (c == '"') {
        v->type = KILN__JSON_STRING;
        return (v->string = parse_string(p)) != NULL;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_integer(p, v);
    return fail(p, p->pos, "expected an object, an array, a string or an integer");
}

static void json_clear(kiln__json *v)
{
    for (size_t i = 0; i < v->n_items; i++)
        json_clear(&v->items[i]);
    free(v->items);
    free(v->key);
    free(v->string);
}

kiln__json *kiln__json_parse(const char *text, size_t len, char *err, size_t err_len)
{
    parser      p = { .text = text, .len = len, .err = err, .err_len = err_len };
    kiln__json *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    bool ok = parse_value(&p, v, 0);
    if (ok) {
        skip_space(&p);
        if (p.pos < p.len)
            ok = fail(&p, p.pos, "expected the end of the text after the value");
    }
    if (!ok) {
        kiln__json_free(v);
        return NULL;
    }
    return v;
}

void kiln__json_free(kiln__json *v)
{
    if (v) {
        json_clear(v);
        free(v);
    }
}

const kiln__json *kiln__json_get(const kiln__json *object, const char *key)
{
    for (size_t i = 0; object && object->type == KILN__JSON_OBJECT &&
                       i < object->n_items; i++)
        if (strcmp(object->items[i].key, key) == 0)
            return &object->items[i];
    return NULL;
}

const char *kiln__json_type_name(kiln__json_type type)
{
    switch (type) {
    case KILN__JSON_OBJECT:  return "an object";
    case KILN__JSON_ARRAY:   return "an array";
    case KILN__JSON_STRING:  return "a string";
    case KILN__JSON_INTEGER: return "an integer";
    }
    return "a value";
}
