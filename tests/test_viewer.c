/* viewer: the URL grammar (accepted forms, traversal and malformed
 * targets), a fuzz loop of random request targets against the route
 * parser, a live server on 127.0.0.1 (ephemeral port) fed random and
 * hostile request lines, bounded in count and time, and the tile cache's
 * single flight (concurrent misses of one tile: one render). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"
#include "viewer.h"
#include "viewer_private.h"

static int parse(const char *uri, sp_route *r) {
    return sp_route_parse("GET", uri, r);
}

static void test_grammar_accepts(void) {
    sp_route r;
    CU_ASSERT_EQUAL(parse("/", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_INDEX);
    CU_ASSERT_EQUAL(parse("/slide/CMU-1_a", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_SLIDE_PAGE);
    CU_ASSERT_STRING_EQUAL(r.id, "CMU-1_a");
    CU_ASSERT_EQUAL(parse("/api/slides", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_API_SLIDES);
    CU_ASSERT_EQUAL(parse("/api/slide/x1", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_API_SLIDE);
    CU_ASSERT_EQUAL(
        parse("/api/slide/x1/features?x=0&y=10&w=512&h=256&feature=tissue.frac",
              &r),
        200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_API_FEATURES);
    CU_ASSERT(r.has_region && r.x == 0 && r.y == 10 && r.w == 512 &&
              r.h == 256);
    CU_ASSERT_STRING_EQUAL(r.feature, "tissue.frac");
    CU_ASSERT_EQUAL(parse("/api/slide/x1/features?feature=_a", &r), 200);
    CU_ASSERT(!r.has_region);
    CU_ASSERT_EQUAL(parse("/dzi/slide_0001.dzi?v=0123abcd", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_DZI);
    CU_ASSERT_STRING_EQUAL(r.id, "slide_0001");
    CU_ASSERT_STRING_EQUAL(r.version, "0123abcd");
    CU_ASSERT_EQUAL(parse("/dzi/a_files_files/12/0_31.jpeg", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_TILE);
    CU_ASSERT_STRING_EQUAL(r.id, "a_files");
    CU_ASSERT(r.level == 12 && r.col == 0 && r.row == 31);
    CU_ASSERT_STRING_EQUAL(r.ext, "jpeg");
    CU_ASSERT_EQUAL(parse("/dzi/b_files/0/0_0.webp", &r), 200);
    CU_ASSERT_EQUAL(parse("/static/openseadragon.min.js", &r), 200);
    CU_ASSERT_EQUAL(r.kind, SP_ROUTE_STATIC);
    CU_ASSERT_EQUAL(parse("/assoc/x/label.png", &r), 200);
    CU_ASSERT_STRING_EQUAL(r.name, "label");
    CU_ASSERT_EQUAL(sp_route_parse("HEAD", "/", &r), 200);
}

static void test_grammar_rejects(void) {
    sp_route r;
    static const struct {
        const char *uri;
        int status;
    } cases[] = {
        {"", 400},
        {"x", 400},
        {"//", 400},
        {"/static//viewer.js", 400},
        {"/static/../etc/passwd", 400},
        {"/..", 400},
        {"/.", 400},
        {"/static/%2e%2e/x", 400},
        {"/static/viewer.js%00", 400},
        {"/%2F", 400},
        {"/static/viewer.js ", 400},
        {"/a\\b", 400},
        {"/slide/a b", 400},
        {"/slide/\x01", 400},
        {"/slide/a?v=xyz", 400},
        {"/slide/a?v=", 400},
        {"/slide/a?v=1&v=2", 400},
        {"/slide/a?q=1", 400},
        {"/slide/a?x=1", 400},
        {"/slide/a?&", 400},
        {"/slide/a?v=1&", 400},
        {"/api/slide/a/features?x=1&y=2", 400},
        {"/api/slide/a/features?x=1&y=2&w=0&h=1", 400},
        {"/api/slide/a/features?feature=1a", 400},
        {"/api/slide/a/features?feature=a-b", 400},
        {"/api/slide/a/features?x=-1&y=0&w=1&h=1", 400},
        {"/api/slide/a/features?x=01&y=0&w=1&h=1", 400},
        {"/nope", 404},
        {"/slide", 404},
        {"/slide/", 400},
        {"/slide/-a", 404},
        {"/slide/a/b", 404},
        {"/static/nope.js", 404},
        {"/static/viewer.js.map", 404},
        {"/dzi/a", 404},
        {"/dzi/.dzi", 404},
        {"/dzi/a_files/1/0_0.gif", 404},
        {"/dzi/a_files/01/0_0.jpeg", 404},
        {"/dzi/a_files/63/0_0.jpeg", 404},
        {"/dzi/a_files/1/0-0.jpeg", 404},
        {"/dzi/a_files/1/0_0_0.jpeg", 404},
        {"/dzi/a_files/1/0_.jpeg", 404},
        {"/dzi/a_files/1/_0.jpeg", 404},
        {"/dzi/a_files/1/9999999999_0.jpeg", 404},
        {"/dzi/a_files/1/0_0.jpeg/x", 404},
        {"/assoc/a/label.jpeg", 404},
        {"/assoc/a/secret.png", 404},
        {"/etc/passwd", 404},
        {"/slide/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         404},
        {"/a/b/c/d/e/f/g/h/i", 404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = parse(cases[i].uri, &r);
        if (st != cases[i].status)
            fprintf(stderr, "  '%s': %d, want %d\n", cases[i].uri, st,
                    cases[i].status);
        CU_ASSERT_EQUAL(st, cases[i].status);
    }
    char *big = malloc(SP_ROUTE_MAX_URI + 10);
    memset(big, 'a', SP_ROUTE_MAX_URI + 9);
    big[0] = '/';
    big[SP_ROUTE_MAX_URI + 9] = '\0';
    CU_ASSERT_EQUAL(parse(big, &r), 414);
    free(big);
    CU_ASSERT_EQUAL(sp_route_parse("POST", "/", &r), 405);
    CU_ASSERT_EQUAL(sp_route_parse("get", "/", &r), 405);
    CU_ASSERT_EQUAL(sp_route_parse("", "/", &r), 405);
    CU_ASSERT_EQUAL(sp_route_parse(NULL, "/", &r), 400);
    CU_ASSERT_EQUAL(sp_route_parse("GET", NULL, &r), 400);
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* A random target: pieces of valid URLs, hostile fragments, random bytes. */
static size_t random_target(char *buf, size_t cap) {
    static const char *const pieces[] = {"/",
                                         "/slide/",
                                         "/api/",
                                         "slide",
                                         "slides",
                                         "/features",
                                         "?",
                                         "&",
                                         "=",
                                         "x=",
                                         "y=1",
                                         "w=0",
                                         "h=99999999999999",
                                         "feature=",
                                         "v=",
                                         "/dzi/",
                                         ".dzi",
                                         "_files",
                                         "/12/",
                                         "0_0",
                                         ".jpeg",
                                         ".png",
                                         "..",
                                         "%2e",
                                         "%00",
                                         "%",
                                         "/static/",
                                         "viewer.js",
                                         "/assoc/",
                                         "label.png",
                                         "boxes",
                                         "-",
                                         "_",
                                         "0",
                                         "63",
                                         "9999999999",
                                         "//",
                                         "\\",
                                         " ",
                                         "\t"};
    size_t n = 0;
    int parts = 1 + (int)(rnd() % 12);
    for (int i = 0; i < parts && n < cap - 1; i++) {
        if (rnd() % 4 == 0) {
            buf[n++] = (char)(1 + rnd() % 255); /* never NUL in a C string */
        } else {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof *pieces)];
            size_t k = strlen(p);
            if (n + k >= cap - 1)
                break;
            memcpy(buf + n, p, k);
            n += k;
        }
    }
    buf[n] = '\0';
    return n;
}

static void test_fuzz_parser(void) {
    char buf[4200];
    sp_route r;
    double t0 = sp_now();
    long counts[600] = {0};
    int i;
    for (i = 0; i < 300000 && sp_now() - t0 < 5; i++) {
        random_target(buf, rnd() % 8 == 0 ? sizeof buf : 200);
        int st = sp_route_parse(rnd() % 16 ? "GET" : "POST", buf, &r);
        CU_ASSERT(st == 200 || st == 400 || st == 404 || st == 405 ||
                  st == 414);
        if (st == 200) {
            /* anything accepted is within the grammar */
            CU_ASSERT(buf[0] == '/' && !strstr(buf, "..") &&
                      !strchr(buf, '%') && !strstr(buf, "//"));
        }
        counts[st]++;
    }
    CU_ASSERT(i > 1000);
    CU_ASSERT(counts[400] > 0 && counts[404] > 0);
}

/* ---- a live server -------------------------------------------------- */

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send raw bytes, return the status of the answer (0: none). */
static int exchange(int port, const char *req, size_t n) {
    int fd = connect_to(port);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t k = send(fd, req + off, n - off, MSG_NOSIGNAL);
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    char buf[64] = {0};
    ssize_t got = 0, k;
    while (got < 12 &&
           (k = recv(fd, buf + got, sizeof buf - 1 - (size_t)got, 0)) > 0)
        got += k;
    close(fd);
    int st = 0;
    if (got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0)
        st = atoi(buf + 9);
    return st;
}

/* ---- single flight ---- */

typedef struct {
    sp_tile_cache *c;
    int64_t col;
    bool fail;
    sp_cached_tile *got;
    bool claimed;
} flight_arg;

static int renders;
static pthread_mutex_t renders_mu = PTHREAD_MUTEX_INITIALIZER;

static void *flight_thread(void *p) {
    flight_arg *a = p;
    a->got = sp__tile_cache_claim(a->c, a->c, 3, a->col, 7, &a->claimed);
    if (a->claimed) {
        pthread_mutex_lock(&renders_mu);
        renders++;
        pthread_mutex_unlock(&renders_mu);
        usleep(200 * 1000); /* a slow render: the others arrive meanwhile */
        static const char data[] = "tile bytes";
        sp_cached_tile *t = a->fail ? NULL
                                    : sp__tile_cache_put(a->c, a->c, 3, a->col,
                                                         7, data, sizeof data);
        sp__tile_cache_land(a->c, a->c, 3, a->col, 7, t);
        a->got = t;
    }
    return NULL;
}

static void run_flight(bool fail) {
    enum { N = 8 };
    sp_tile_cache *c = sp__tile_cache_new(1 << 20);
    CU_ASSERT_FATAL(c != NULL);
    flight_arg a[N];
    pthread_t th[N];
    renders = 0;
    for (int i = 0; i < N; i++) {
        a[i] = (flight_arg){.c = c, .col = 5, .fail = fail};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, flight_thread, &a[i]) ==
                        0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int claims = 0;
    sp_cached_tile *first = NULL;
    for (int i = 0; i < N; i++) {
        claims += a[i].claimed;
        if (fail) {
            CU_ASSERT(a[i].got == NULL);
        } else {
            CU_ASSERT_FATAL(a[i].got != NULL);
            if (!first)
                first = a[i].got;
            CU_ASSERT(a[i].got == first); /* the first's result itself */
            CU_ASSERT_EQUAL(sp__cached_tile_size(a[i].got), 11);
        }
    }
    CU_ASSERT_EQUAL(claims, 1);
    CU_ASSERT_EQUAL(renders, 1);
    size_t bytes, entries;
    uint64_t hits, misses, waits;
    sp__tile_cache_stats(c, &bytes, &entries, &hits, &misses, &waits);
    CU_ASSERT_EQUAL(entries, fail ? 0 : 1);
    for (int i = 0; i < N; i++)
        sp__cached_tile_unref(a[i].got);
    /* after a failed flight, the next miss claims again */
    if (fail) {
        bool claimed;
        CU_ASSERT(sp__tile_cache_claim(c, c, 3, 5, 7, &claimed) == NULL);
        CU_ASSERT(claimed);
        sp__tile_cache_land(c, c, 3, 5, 7, NULL);
    }
    sp__tile_cache_free(c);
}

static void test_single_flight(void) {
    run_flight(false);
    run_flight(true);
}

static void test_live_server(void) {
    char *boxes = sp_test_path("boxes.tiff");
    const char *inputs[] = {boxes};
    sp_catalog *cat = NULL;
    sp_error err = {0};
    CU_ASSERT_FATAL(sp_catalog_open(inputs, 1, NULL, &cat, &err));
    CU_ASSERT_EQUAL(sp_catalog_count(cat), 1);
    CU_ASSERT_STRING_EQUAL(sp_catalog_id(cat, 0), "boxes");
    sp_server_opts so = {.port = 0, .timeout_s = 5};
    sp_server *srv = sp_server_start(cat, &so, &err);
    CU_ASSERT_FATAL(srv != NULL);
    int port = sp_server_port(srv);
    CU_ASSERT(port > 0);

    static const char *const good =
        "GET /dzi/boxes_files/9/0_0.jpeg HTTP/1.1\r\n"
        "Host: x\r\nConnection: close\r\n\r\n";
    CU_ASSERT_EQUAL(exchange(port, good, strlen(good)), 200);
    static const char *const hostile[] = {
        "GET /static/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /static/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /dzi/boxes_files/9/0_0.jpeg%00 HTTP/1.1\r\nHost: x\r\n\r\n",
        "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        int st = exchange(port, hostile[i], strlen(hostile[i]));
        CU_ASSERT(st >= 400 && st < 500);
    }
    /* a NUL byte inside the target */
    static const char nul[] = "GET /static/viewer.js\0/../x HTTP/1.1\r\n"
                              "Host: x\r\n\r\n";
    int st = exchange(port, nul, sizeof nul - 1);
    CU_ASSERT(st >= 400 && st < 500);
    /* an overlong target */
    size_t bign = 70000;
    char *big = malloc(bign + 64);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', bign);
    memcpy(big + 5 + bign, " HTTP/1.1\r\nHost: x\r\n\r\n", 23);
    st = exchange(port, big, 5 + bign + 23);
    CU_ASSERT(st == 0 || (st >= 400 && st < 500));
    free(big);

    /* random request lines, bounded in count and time */
    char line[600], req[800];
    double t0 = sp_now();
    int n = 0, bad = 0;
    static const char *const methods[] = {"GET",    "HEAD", "POST",
                                          "G\x01T", "",     "GET GET"};
    for (; n < 400 && sp_now() - t0 < 8; n++) {
        random_target(line, sizeof line);
        int k = snprintf(req, sizeof req,
                         "%s %s HTTP/1.%d\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n",
                         methods[rnd() % 6], line, (int)(rnd() % 2));
        if (k < 0 || (size_t)k >= sizeof req)
            continue;
        if (rnd() % 10 == 0) /* flip a byte anywhere */
            req[rnd() % (unsigned)k] = (char)(rnd() % 256);
        st = exchange(port, req, (size_t)k);
        if (st >= 500 || st == -1)
            bad++;
    }
    CU_ASSERT(n > 50);
    CU_ASSERT_EQUAL(bad, 0);
    /* still alive and well */
    CU_ASSERT_EQUAL(exchange(port, good, strlen(good)), 200);
    sp_server_stop(srv);
    sp_catalog_close(cat);
    free(boxes);
}

/* Connections whose request head is late are cut by the timer; numbers
 * of closed sockets are reused by new connections, which must be served. */
static void test_head_deadline(void) {
    char *boxes = sp_test_path("boxes.tiff");
    const char *inputs[] = {boxes};
    sp_catalog *cat = NULL;
    sp_error err = {0};
    CU_ASSERT_FATAL(sp_catalog_open(inputs, 1, NULL, &cat, &err));
    sp_server_opts so = {.port = 0, .head_timeout_s = 1, .timeout_s = 30};
    sp_server *srv = sp_server_start(cat, &so, &err);
    CU_ASSERT_FATAL(srv != NULL);
    int port = sp_server_port(srv);
    static const char *const good =
        "GET /dzi/boxes_files/9/0_0.jpeg HTTP/1.1\r\n"
        "Host: x\r\nConnection: close\r\n\r\n";
    enum { N = 12 };
    for (int round = 0; round < 3; round++) {
        int fds[N];
        double t0 = sp_now();
        for (int i = 0; i < N; i++) {
            fds[i] = connect_to(port);
            if (fds[i] >= 0)
                send(fds[i], "GET / HTTP/1.1\r\nHo", 19, MSG_NOSIGNAL);
        }
        /* a complete request meanwhile is served at once */
        CU_ASSERT_EQUAL(exchange(port, good, strlen(good)), 200);
        int cut = 0;
        for (int i = 0; i < N; i++) {
            if (fds[i] < 0)
                continue;
            char b[64];
            ssize_t k = recv(fds[i], b, sizeof b, 0); /* EOF when cut */
            if (k <= 0 && sp_now() - t0 < 4.5)
                cut++;
            close(fds[i]);
        }
        CU_ASSERT_EQUAL(cut, N);
        CU_ASSERT(sp_now() - t0 >= 0.9);
    }
    CU_ASSERT(sp_server_deadline_cuts(srv) >= 3 * N);
    CU_ASSERT_EQUAL(exchange(port, good, strlen(good)), 200);
    sp_server_stop(srv);
    sp_catalog_close(cat);
    free(boxes);
}

/* ---- one reader bound for all slides ---- */

typedef struct {
    sp_catalog *c;
    sp_vslide *s;
    sp_reader *r;
} pool_arg;

static void *pool_thread(void *p) {
    pool_arg *a = p;
    sp_error err = {0};
    a->r = sp__slide_reader_get(a->c, a->s, &err); /* blocks: all busy */
    return NULL;
}

static void test_reader_bound(void) {
    char *boxes = sp_test_path("boxes.tiff");
    const char *in[] = {boxes, boxes, boxes};
    sp_catalog_opts o = {.readers = 2};
    sp_catalog *c = NULL;
    sp_error err = {0};
    CU_ASSERT_FATAL(sp_catalog_open(in, 3, &o, &c, &err));
    CU_ASSERT_FATAL(sp_catalog_count(c) == 3);
    sp_vslide *s[3];
    for (int i = 0; i < 3; i++)
        s[i] = sp__catalog_find(c, sp_catalog_id(c, (size_t)i));
    /* idle readers of other slides are closed to open new ones */
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 3; i++) {
            sp_reader *r = sp__slide_reader_get(c, s[i], &err);
            CU_ASSERT_FATAL(r != NULL);
            CU_ASSERT(c->rd_open <= 2);
            sp__slide_reader_put(c, s[i], r, false);
        }
    /* both busy: a third waits until one is returned */
    sp_reader *r0 = sp__slide_reader_get(c, s[0], &err);
    sp_reader *r1 = sp__slide_reader_get(c, s[1], &err);
    CU_ASSERT_FATAL(r0 && r1);
    pool_arg a = {.c = c, .s = s[2]};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, pool_thread, &a) == 0);
    usleep(100 * 1000);
    pthread_mutex_lock(&c->rd_mu);
    CU_ASSERT(c->rd_open == 2);
    pthread_mutex_unlock(&c->rd_mu);
    sp__slide_reader_put(c, s[0], r0, false);
    pthread_join(th, NULL);
    CU_ASSERT(a.r != NULL);
    CU_ASSERT(c->rd_open <= 2);
    sp__slide_reader_put(c, s[2], a.r, false);
    sp__slide_reader_put(c, s[1], r1, false);
    CU_ASSERT(c->rd_open <= 2);
    sp_catalog_close(c);
    free(boxes);
}

static void test_catalog_errors(void) {
    sp_catalog *cat = NULL;
    sp_error err = {0};
    const char *missing[] = {"/nonexistent/slide.svs"};
    CU_ASSERT_FALSE(sp_catalog_open(missing, 1, NULL, &cat, &err));
    CU_ASSERT_PTR_NULL(cat);
    CU_ASSERT(strstr(err.msg, "/nonexistent/slide.svs") != NULL);
    sp_error_clear(&err);
    char *boxes = sp_test_path("boxes.tiff");
    const char *in[] = {boxes, boxes};
    sp_catalog_opts o = {.asset_dir = "/nonexistent"};
    CU_ASSERT_FALSE(sp_catalog_open(in, 1, &o, &cat, &err));
    CU_ASSERT(strstr(err.msg, "/nonexistent") != NULL);
    sp_error_clear(&err);
    /* the same slide twice: unique ids */
    CU_ASSERT_FATAL(sp_catalog_open(in, 2, NULL, &cat, &err));
    CU_ASSERT_STRING_EQUAL(sp_catalog_id(cat, 0), "boxes");
    CU_ASSERT_STRING_EQUAL(sp_catalog_id(cat, 1), "boxes-2");
    sp_server_opts so = {.listen = "localhost"};
    CU_ASSERT_PTR_NULL(sp_server_start(cat, &so, &err));
    CU_ASSERT_EQUAL(err.code, SP_ERR_USAGE);
    sp_catalog_close(cat);
    free(boxes);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* A sidecar whose manifest row is shorter than its level: skipped before
 * any memory is given to the level's cols x rows tiles (shown by a
 * seed of fuzz/fuzz_dzi.c: 70 bytes asked for 2 GiB), and the levels after it
 * are still read. Outside ASan, the address space is capped at 1 GiB
 * above the current size while the catalogue opens, so the old
 * allocation fails (and stopped reading the manifest there). */
static void test_catalog_short_manifest(void) {
    char dzi[512], files[512], json[512];
    snprintf(dzi, sizeof dzi, "%s/wide.dzi", sp_test_tmpdir());
    snprintf(files, sizeof files, "%s/wide_files", sp_test_tmpdir());
    snprintf(json, sizeof json, "%s/wide.json", sp_test_tmpdir());
    write_text(dzi, "<Image TileSize=\"1\" Overlap=\"0\" Format=\"webp\">"
                    "<Size Width=\"2147483648\" Height=\"1\"/></Image>");
    mkdir(files, 0755);
    write_text(json, "{\"levels\":[{\"level\":31,\"tiles\":[\"1\"]},"
                     "{\"level\":3,\"tiles\":[\"10101010\"]}]}");
    struct rlimit old;
    bool capped = false;
#if !defined(__SANITIZE_ADDRESS__)
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld", &pages) == 1 && getrlimit(RLIMIT_AS, &old) == 0) {
        struct rlimit cap = old;
        cap.rlim_cur =
            (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)1 << 30);
        capped = setrlimit(RLIMIT_AS, &cap) == 0;
    }
    if (f)
        fclose(f);
#endif
    sp_catalog *cat = NULL;
    sp_error err = {0};
    const char *in[] = {dzi};
    sp_catalog_opts o = {.cache_bytes = 1 << 20, .readers = 1};
    bool ok = sp_catalog_open(in, 1, &o, &cat, &err);
    if (capped)
        setrlimit(RLIMIT_AS, &old);
    CU_ASSERT_TRUE_FATAL(ok);
    const sp_vslide *s = sp__catalog_find(cat, sp_catalog_id(cat, 0));
    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT_PTR_NULL(s->manifest[31]);
    CU_ASSERT_PTR_NOT_NULL(s->manifest[3]);
    CU_ASSERT(s->mcols[3] == 8 && s->mrows[3] == 1);
    if (s->manifest[3])
        CU_ASSERT(s->manifest[3][0] == 1 && s->manifest[3][1] == 0);
    sp_catalog_close(cat);
    unlink(dzi);
    unlink(json);
    rmdir(files);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("viewer", NULL, NULL);
    CU_ADD_TEST(s, test_grammar_accepts);
    CU_ADD_TEST(s, test_grammar_rejects);
    CU_ADD_TEST(s, test_fuzz_parser);
    CU_ADD_TEST(s, test_live_server);
    CU_ADD_TEST(s, test_catalog_errors);
    CU_ADD_TEST(s, test_head_deadline);
    CU_ADD_TEST(s, test_single_flight);
    CU_ADD_TEST(s, test_reader_bound);
    CU_ADD_TEST(s, test_catalog_short_manifest);
    return sp_test_run();
}
