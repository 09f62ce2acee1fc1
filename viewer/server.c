/* The HTTP server: libmicrohttpd with an epoll event loop on a pool of
 * worker threads (an idle connection costs no thread), HTTP/1.1
 * keep-alive, bounded connections in all and per client address, bounded
 * request heads and idle time, and a deadline for each request head: a
 * client must send its whole head within head_timeout_s of connecting or
 * of its previous response, else a timer shuts its socket down (so a
 * client trickling bytes cannot hold a slot). Every request target is matched
 * by sp_route_parse on the raw URI as received (before any percent
 * decoding), then answered from the catalogue: pages, JSON, Deep Zoom
 * descriptors and tiles (files opened relative to the pyramid's level
 * folders, never by a path from the URL), static assets. */
#include "viewer_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_TILE_FILE (64u << 20)
#define MAX_FEATURE_TILES 250000

/* A connection, for the head deadline. Registered when MHD starts it and
 * removed (under `mu`) when MHD reports it closed, which MHD does before
 * closing the socket: so while `mu` is held, a registered fd is still
 * this connection's and never a reused number. */
typedef struct conn_rec {
    int fd;
    double deadline; /* monotonic seconds; 0: none (a request is in hand) */
    bool cut;
    struct conn_rec *prev, *next;
} conn_rec;

struct sp_server {
    struct MHD_Daemon *d;
    sp_catalog *c;
    int port;
    double head_s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn_rec *conns;
    bool stopping, timer_started;
    pthread_t timer;
    uint64_t cuts;
};

static void server_free(sp_server *s);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    bool seen;       /* the handler has been called for this request */
    const char *raw; /* where MHD holds the request target (compared only) */
    size_t raw_len;  /* its full strlen */
    char uri[SP_ROUTE_MAX_URI + 2]; /* one more: "too long" is visible */
} req_ctx;

static const char *const CSP =
    "default-src 'none'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/* ---- responses --------------------------------------------------------- */

static void common_headers(struct MHD_Response *rsp) {
    MHD_add_response_header(rsp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(rsp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(rsp, "Cross-Origin-Resource-Policy", "same-origin");
}

static enum MHD_Result queue(struct MHD_Connection *con, unsigned status,
                             struct MHD_Response *rsp) {
    if (!rsp)
        return MHD_NO;
    common_headers(rsp);
    enum MHD_Result r = MHD_queue_response(con, status, rsp);
    MHD_destroy_response(rsp);
    return r;
}

static enum MHD_Result send_error(struct MHD_Connection *con, unsigned status) {
    const char *msg;
    switch (status) {
    case 400: msg = "400 Bad Request\n"; break;
    case 404: msg = "404 Not Found\n"; break;
    case 405: msg = "405 Method Not Allowed\n"; break;
    case 414: msg = "414 URI Too Long\n"; break;
    case 503: msg = "503 Service Unavailable\n"; break;
    default:
        msg = "500 Internal Server Error\n";
        status = 500;
        break;
    }
    struct MHD_Response *rsp = MHD_create_response_from_buffer(
        strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
    if (!rsp)
        return MHD_NO;
    MHD_add_response_header(rsp, "Content-Type", "text/plain; charset=utf-8");
    MHD_add_response_header(rsp, "Cache-Control", "no-store");
    if (status == 405)
        MHD_add_response_header(rsp, "Allow", "GET, HEAD");
    return queue(con, status, rsp);
}

static bool etag_matches(struct MHD_Connection *con, const char *etag) {
    const char *inm =
        MHD_lookup_connection_value(con, MHD_HEADER_KIND, "If-None-Match");
    if (!inm)
        return false;
    if (strcmp(inm, "*") == 0)
        return true;
    /* a list of entity tags; weak ones (W/) compare weakly */
    size_t n = strlen(etag);
    for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag)) {
        char after = p[n];
        if (after == '\0' || after == ',' || after == ' ')
            return true;
    }
    return false;
}

static enum MHD_Result not_modified(struct MHD_Connection *con,
                                    const char *etag, const char *cache) {
    struct MHD_Response *rsp =
        MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!rsp)
        return MHD_NO;
    MHD_add_response_header(rsp, "ETag", etag);
    MHD_add_response_header(rsp, "Cache-Control", cache);
    return queue(con, MHD_HTTP_NOT_MODIFIED, rsp);
}

/* Send a buffer we own (copied by MHD), with validators. */
static enum MHD_Result send_buf(struct MHD_Connection *con, const char *type,
                                const void *data, size_t n, const char *etag,
                                const char *cache, bool csp) {
    if (etag && etag_matches(con, etag))
        return not_modified(con, etag, cache);
    struct MHD_Response *rsp =
        MHD_create_response_from_buffer(n, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!rsp)
        return MHD_NO;
    MHD_add_response_header(rsp, "Content-Type", type);
    MHD_add_response_header(rsp, "Cache-Control", cache);
    if (etag)
        MHD_add_response_header(rsp, "ETag", etag);
    if (csp) {
        MHD_add_response_header(rsp, "Content-Security-Policy", CSP);
        MHD_add_response_header(rsp, "X-Frame-Options", "DENY");
    }
    return queue(con, MHD_HTTP_OK, rsp);
}

/* Pages and JSON: revalidated every time, ETag from the content. */
static enum MHD_Result send_dynamic(struct MHD_Connection *con,
                                    const char *type, sp_buf *b, bool csp) {
    if (b->oom)
        return send_error(con, 500);
    char etag[24];
    snprintf(etag, sizeof etag, "\"%016llx\"",
             (unsigned long long)sp_fnv1a(SP_FNV_SEED, b->data, b->len));
    return send_buf(con, type, b->data, b->len, etag, "no-cache", csp);
}

static const char *versioned_cache(const char *want, const char *have) {
    return want[0] && strcmp(want, have) == 0
               ? "public, max-age=31536000, immutable"
               : "no-cache";
}

static const char *tile_type(const char *ext) {
    if (strcmp(ext, "png") == 0)
        return "image/png";
    if (strcmp(ext, "webp") == 0)
        return "image/webp";
    return "image/jpeg";
}

static void unref_cb(void *cls) { sp__cached_tile_unref(cls); }

static enum MHD_Result send_cached(struct MHD_Connection *con,
                                   sp_cached_tile *t, const char *type,
                                   const char *etag, const char *cache) {
    struct MHD_Response *rsp =
        MHD_create_response_from_buffer_with_free_callback_cls(
            sp__cached_tile_size(t), (void *)sp__cached_tile_data(t), unref_cb,
            t);
    if (!rsp) {
        sp__cached_tile_unref(t);
        return MHD_NO;
    }
    MHD_add_response_header(rsp, "Content-Type", type);
    MHD_add_response_header(rsp, "Cache-Control", cache);
    MHD_add_response_header(rsp, "ETag", etag);
    return queue(con, MHD_HTTP_OK, rsp);
}

/* ---- handlers ---------------------------------------------------------- */

static enum MHD_Result h_dzi(struct MHD_Connection *con, const sp_vslide *s,
                             const sp_route *r) {
    char xml[512], etag[40];
    int n =
        snprintf(xml, sizeof xml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<Image xmlns=\"http://schemas.microsoft.com/deepzoom/2008\""
                 " Format=\"%s\" Overlap=\"%d\" TileSize=\"%d\">\n"
                 "  <Size Height=\"%lld\" Width=\"%lld\"/>\n</Image>\n",
                 s->ext, s->topts.overlap, s->topts.tile_size,
                 (long long)s->height, (long long)s->width);
    snprintf(etag, sizeof etag, "\"%s\"", s->version);
    return send_buf(con, "application/xml; charset=utf-8", xml, (size_t)n, etag,
                    versioned_cache(r->version, s->version), false);
}

/* A solid background tile of w x h (a background tile the pyramid
 * skipped), encoded once per size and kept in the cache. */
static sp_cached_tile *background_tile(sp_catalog *c, sp_vslide *s, int64_t w,
                                       int64_t h) {
    sp_cached_tile *t = sp__tile_cache_get(c->cache, s, -1, w, h);
    if (t)
        return t;
    uint8_t *px = malloc((size_t)(w * h * 3));
    if (!px)
        return NULL;
    for (int64_t i = 0; i < w * h; i++)
        memcpy(px + 3 * i, s->topts.background, 3);
    sp_buf b;
    sp_buf_init(&b);
    sp_error err = {0};
    if (sp_tile_encode(s->topts.format, s->topts.quality, px, (int)w, (int)h,
                       w * 3, &b, &err))
        t = sp__tile_cache_put(c->cache, s, -1, w, h, b.data, b.len);
    sp_buf_free(&b);
    free(px);
    return t;
}

static enum MHD_Result h_tile(struct MHD_Connection *con, sp_catalog *c,
                              sp_vslide *s, const sp_route *r) {
    sp_tile_rect t;
    if (strcmp(r->ext, s->ext) != 0 ||
        !sp_tile_dz_geometry(s->width, s->height, s->topts.tile_size,
                             s->topts.overlap, r->level, r->col, r->row, &t))
        return send_error(con, 404);
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s-%d-%lld-%lld\"", s->version, r->level,
             (long long)r->col, (long long)r->row);
    const char *cache = versioned_cache(r->version, s->version);
    if (etag_matches(con, etag))
        return not_modified(con, etag, cache);
    const char *type = tile_type(s->ext);

    if (s->dzi_path) {
        int lfd = s->level_fd[r->level];
        char name[64];
        sp_pyramid_tile_name(name, sizeof name, r->col, r->row, s->ext);
        int fd = lfd >= 0 ? openat(lfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                          : -1;
        if (fd >= 0) {
            struct stat st;
            if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
                (size_t)st.st_size > MAX_TILE_FILE) {
                close(fd);
                return send_error(con, 404);
            }
            struct MHD_Response *rsp =
                MHD_create_response_from_fd((size_t)st.st_size, fd);
            if (!rsp) {
                close(fd);
                return MHD_NO;
            }
            MHD_add_response_header(rsp, "Content-Type", type);
            MHD_add_response_header(rsp, "Cache-Control", cache);
            MHD_add_response_header(rsp, "ETag", etag);
            return queue(con, MHD_HTTP_OK, rsp);
        }
        /* absent: a background tile the pyramid skipped, unless the
         * manifest says it was written (then the pyramid is damaged) */
        const uint8_t *m = s->manifest[r->level];
        if (m && r->col < s->mcols[r->level] && r->row < s->mrows[r->level] &&
            m[r->row * s->mcols[r->level] + r->col])
            return send_error(con, 404);
        sp_cached_tile *bt = background_tile(c, s, t.w, t.h);
        if (!bt)
            return send_error(con, 500);
        return send_cached(con, bt, type, etag, cache);
    }

    /* single flight: concurrent requests for one tile render it once */
    bool claimed;
    sp_cached_tile *ct =
        sp__tile_cache_claim(c->cache, s, r->level, r->col, r->row, &claimed);
    if (claimed) {
        sp_error err = {0};
        sp_buf b;
        sp_buf_init(&b);
        if (sp__fly_render(c, s, r->level, r->col, r->row, &b, &err))
            ct = sp__tile_cache_put(c->cache, s, r->level, r->col, r->row,
                                    b.data, b.len);
        sp_buf_free(&b);
        sp__tile_cache_land(c->cache, s, r->level, r->col, r->row, ct);
    }
    if (!ct)
        return send_error(con, 500);
    return send_cached(con, ct, type, etag, cache);
}

static enum MHD_Result h_features(struct MHD_Connection *con, sp_catalog *c,
                                  sp_vslide *s, const sp_route *r) {
    const sp_vfeatures *f = sp__slide_features(c, s);
    if (!f)
        return send_error(con, 404);
    int col = -1;
    if (r->feature[0]) {
        for (int i = 0; i < f->ncols && col < 0; i++)
            if (strcmp(f->columns[i], r->feature) == 0)
                col = i;
        if (col < 0)
            return send_error(con, 404);
    }
    int64_t x0 = 0, y0 = 0, x1 = s->width, y1 = s->height;
    if (r->has_region) {
        x0 = r->x;
        y0 = r->y;
        x1 = r->x + r->w;
        y1 = r->y + r->h;
    }
    double E = f->extent;
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "id");
    sp_json_string(&j, s->id);
    sp_json_key(&j, "tile_size");
    sp_json_number(&j, E);
    sp_json_key(&j, "region");
    sp_json_begin_array(&j);
    sp_json_int(&j, x0);
    sp_json_int(&j, y0);
    sp_json_int(&j, x1 - x0);
    sp_json_int(&j, y1 - y0);
    sp_json_end_array(&j);
    if (col >= 0) {
        sp_json_key(&j, "feature");
        sp_json_string(&j, f->columns[col]);
        sp_json_key(&j, "min");
        sp_json_number(&j, f->vmin[col]);
        sp_json_key(&j, "max");
        sp_json_number(&j, f->vmax[col]);
    } else {
        sp_json_key(&j, "columns");
        sp_json_begin_array(&j);
        for (int i = 0; i < f->ncols; i++)
            sp_json_string(&j, f->columns[i]);
        sp_json_end_array(&j);
    }
    sp_json_key(&j, "tiles");
    sp_json_begin_array(&j);
    int64_t count = 0;
    bool truncated = false;
    for (int64_t i = 0; i < f->n; i++) {
        int64_t tx = f->xy[2 * i], ty = f->xy[2 * i + 1];
        if (!(tx < x1 && tx + E > x0 && ty < y1 && ty + E > y0))
            continue;
        if (count == MAX_FEATURE_TILES) {
            truncated = true;
            break;
        }
        count++;
        sp_json_begin_array(&j);
        sp_json_int(&j, tx);
        sp_json_int(&j, ty);
        if (col >= 0) {
            sp_json_number(&j, f->vals[(size_t)col * (size_t)f->n + (size_t)i]);
        } else {
            for (int k = 0; k < f->ncols; k++)
                sp_json_number(&j,
                               f->vals[(size_t)k * (size_t)f->n + (size_t)i]);
        }
        sp_json_end_array(&j);
    }
    sp_json_end_array(&j);
    sp_json_key(&j, "count");
    sp_json_int(&j, count);
    sp_json_key(&j, "truncated");
    sp_json_bool(&j, truncated);
    sp_json_end_object(&j);
    enum MHD_Result res =
        send_dynamic(con, "application/json; charset=utf-8", &b, false);
    sp_buf_free(&b);
    return res;
}

static enum MHD_Result dispatch(struct MHD_Connection *con, sp_catalog *c,
                                const sp_route *r) {
    sp_vslide *s = NULL;
    if (r->id[0] && !(s = sp__catalog_find(c, r->id)))
        return send_error(con, 404);
    sp_buf b;
    sp_buf_init(&b);
    enum MHD_Result res;
    switch (r->kind) {
    case SP_ROUTE_INDEX:
        sp__page_index(c, &b);
        res = send_dynamic(con, "text/html; charset=utf-8", &b, true);
        break;
    case SP_ROUTE_SLIDE_PAGE:
        sp__page_slide(c, s, &b);
        res = send_dynamic(con, "text/html; charset=utf-8", &b, true);
        break;
    case SP_ROUTE_API_SLIDES: {
        sp_json j;
        sp_json_init(&j, &b, false);
        sp_json_begin_object(&j);
        sp_json_key(&j, "slides");
        sp_json_begin_array(&j);
        for (size_t i = 0; i < c->n; i++)
            sp__json_slide(c, c->slides[i], &j);
        sp_json_end_array(&j);
        sp_json_end_object(&j);
        res = send_dynamic(con, "application/json; charset=utf-8", &b, false);
        break;
    }
    case SP_ROUTE_API_SLIDE: {
        sp_json j;
        sp_json_init(&j, &b, false);
        sp__json_slide(c, s, &j);
        res = send_dynamic(con, "application/json; charset=utf-8", &b, false);
        break;
    }
    case SP_ROUTE_API_FEATURES: res = h_features(con, c, s, r); break;
    case SP_ROUTE_DZI: res = h_dzi(con, s, r); break;
    case SP_ROUTE_TILE: res = h_tile(con, c, s, r); break;
    case SP_ROUTE_STATIC: {
        const sp_vasset *a = sp__catalog_asset(c, r->name);
        if (!a) {
            res = send_error(con, 404);
            break;
        }
        res = send_buf(con, a->type, a->data, a->size, a->etag,
                       versioned_cache(r->version, a->version), false);
        break;
    }
    case SP_ROUTE_ASSOC: {
        sp_error err = {0};
        if (!c->opts.show_associated ||
            !sp__slide_associated_png(s, r->name, &b, &err)) {
            res = send_error(con, 404);
            break;
        }
        /* labels may carry patient identifiers: never stored by caches */
        res = send_buf(con, "image/png", b.data, b.len, NULL,
                       "private, no-store", false);
        break;
    }
    default: res = send_error(con, 404);
    }
    sp_buf_free(&b);
    return res;
}

static conn_rec *rec_of(struct MHD_Connection *con) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Set (now + head_s) or clear (0) the head deadline of a connection. */
static void set_deadline(sp_server *srv, struct MHD_Connection *con, bool arm) {
    conn_rec *rec = rec_of(con);
    if (!rec)
        return;
    pthread_mutex_lock(&srv->mu);
    rec->deadline = arm ? now_s() + srv->head_s : 0;
    pthread_mutex_unlock(&srv->mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)url;
    (void)upload_data;
    sp_server *srv = cls;
    sp_catalog *c = srv->c;
    req_ctx *rc = *con_cls;
    if (*upload_data_size) { /* a body we never asked for: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!rc)
        return send_error(con, 500);
    if (!rc->seen) {
        /* the whole head is in: its deadline is met */
        rc->seen = true;
        set_deadline(srv, con, false);
        /* A response queued now, before MHD has finished the request, is
         * an "early" one: libmicrohttpd then refuses further requests on
         * the connection and answers "Connection: close". So a plain GET
         * or HEAD is answered on the next call; a request with a body (or
         * another method) is refused now, and that body never read. */
        bool body = MHD_lookup_connection_value(con, MHD_HEADER_KIND,
                                                "Content-Length") ||
                    MHD_lookup_connection_value(con, MHD_HEADER_KIND,
                                                "Transfer-Encoding");
        bool plain = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        if (plain && !body)
            return MHD_YES;
        if (plain) {
            const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND,
                                                         "Content-Length");
            if (!cl || strcmp(cl, "0") != 0)
                return send_error(con, 400);
            return MHD_YES;
        }
    }
    /* MHD ends the target at a NUL byte; the version string follows the
     * target's end directly, so a gap means bytes after a NUL: refuse */
    if (version != rc->raw + rc->raw_len + 1)
        return send_error(con, 400);
    sp_route r;
    int st = sp_route_parse(method, rc->uri, &r);
    if (st != 200)
        return send_error(con, (unsigned)st);
    return dispatch(con, c, &r);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *con) {
    (void)cls;
    (void)con;
    req_ctx *rc = malloc(sizeof *rc);
    if (rc) {
        rc->seen = false;
        rc->raw = uri;
        rc->raw_len = strlen(uri);
        size_t n = strnlen(uri, sizeof rc->uri - 1);
        memcpy(rc->uri, uri, n);
        rc->uri[n] = '\0';
    }
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
    /* the next request's head is due within head_s */
    set_deadline(cls, con, true);
}

static void on_connection(void *cls, struct MHD_Connection *con,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    sp_server *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_rec *rec = ci ? calloc(1, sizeof *rec) : NULL;
        *socket_context = rec;
        if (!rec)
            return; /* no deadline for this one (out of memory) */
        rec->fd = ci->connect_fd;
        pthread_mutex_lock(&srv->mu);
        rec->deadline = now_s() + srv->head_s;
        rec->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = rec;
        srv->conns = rec;
        pthread_mutex_unlock(&srv->mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_rec *rec = *socket_context;
        if (!rec)
            return;
        pthread_mutex_lock(&srv->mu);
        if (rec->prev)
            rec->prev->next = rec->next;
        else
            srv->conns = rec->next;
        if (rec->next)
            rec->next->prev = rec->prev;
        pthread_mutex_unlock(&srv->mu);
        free(rec);
        *socket_context = NULL;
    }
}

/* Every 100 ms: shut down the sockets whose head is late. MHD then sees
 * the connection end and closes it on its own thread. */
static void *deadline_timer(void *arg) {
    sp_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    while (!srv->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
        double t = now_s();
        for (conn_rec *r = srv->conns; r; r = r->next)
            if (r->deadline > 0 && t > r->deadline && !r->cut) {
                shutdown(r->fd, SHUT_RDWR);
                r->cut = true;
                srv->cuts++;
            }
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* ---- daemon ------------------------------------------------------------ */

sp_server *sp_server_start(sp_catalog *c, const sp_server_opts *o,
                           sp_error *err) {
    sp_server_opts opts = {0};
    if (o)
        opts = *o;
    const char *addr = opts.listen ? opts.listen : "127.0.0.1";
    if (opts.port < 0 || opts.port > 65535) {
        sp_error_set(err, SP_ERR_USAGE, NULL, "invalid port %d", opts.port);
        return NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)opts.port);
    } else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)opts.port);
        flags |= MHD_USE_IPv6;
    } else {
        sp_error_set(err, SP_ERR_USAGE, NULL,
                     "--listen: '%s' is not a numeric IPv4 or IPv6 address",
                     addr);
        return NULL;
    }
    sp_server *s = calloc(1, sizeof *s);
    if (!s) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        return NULL;
    }
    s->c = c;
    unsigned maxc = opts.max_connections ? opts.max_connections : 256;
    unsigned per_ip = opts.per_ip_connections ? opts.per_ip_connections : 32;
    unsigned tmo = opts.timeout_s ? opts.timeout_s : 30;
    unsigned head = opts.head_timeout_s ? opts.head_timeout_s : 10;
    unsigned threads =
        opts.threads ? opts.threads : (unsigned)sp_default_threads();
    if (threads < 1)
        threads = 1;
    if (maxc < threads) /* MHD splits the limit between its threads */
        maxc = threads;
    size_t mem = opts.memory_limit ? opts.memory_limit : 32 * 1024;
    s->head_s = head;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->timer, NULL, deadline_timer, s) != 0) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "cannot start a thread");
        goto fail;
    }
    s->timer_started = true;
    s->d = MHD_start_daemon(
        flags, (uint16_t)opts.port, NULL, NULL, on_request, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, maxc,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, tmo, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        mem, MHD_OPTION_LISTEN_BACKLOG_SIZE, 128u, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_END);
    if (!s->d) {
        sp_error_set(err, SP_ERR_OUTPUT, NULL,
                     "cannot listen on %s port %d (in use, or not allowed)",
                     addr, opts.port);
        goto fail;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : opts.port;
    return s;
fail:
    server_free(s);
    return NULL;
}

int sp_server_port(const sp_server *s) { return s->port; }

uint64_t sp_server_deadline_cuts(sp_server *s) {
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->cuts;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void server_free(sp_server *s) {
    if (s->timer_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->timer, NULL);
    }
    if (s->d)
        MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

void sp_server_stop(sp_server *s) {
    if (s)
        server_free(s);
}

void sp_viewer_versions(sp_lib_versions *l) {
    sp_lib_versions_add(l, "libmicrohttpd", false, "%s", MHD_get_version());
}
