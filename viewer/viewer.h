/*
 * viewer: `slidepipe serve`, an HTTP server (libmicrohttpd) for slides and
 * their pyramids and features: a slide list page, an OpenSeadragon viewer
 * page per slide, Deep Zoom tiles (pre-built from disk, or rendered on the
 * fly through the tiler with a bounded cache), and a small JSON API.
 *
 *   sp_catalog  the slides the server was given, each under an id assigned
 *               at startup; URLs carry only ids and tile coordinates,
 *               never a path.
 *   sp_server   the HTTP daemon over a catalog.
 *   sp_route    the URL grammar, as a pure function (fuzzed by the tests).
 *
 * Thread rules: a catalog is built on one thread, then shared read-only
 * by the server's worker threads (its reader pool, overviews, tile cache
 * and HDF5 access take their own locks). HDF5 is touched under one
 * process-wide lock. Nothing here prints.
 */
#ifndef SP_VIEWER_H
#define SP_VIEWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the catalogue ------------------------------------------------------ */

typedef struct {
    bool show_associated;    /* serve label/macro/thumbnail images (off:
                                labels carry patient identifiers) */
    size_t cache_bytes;      /* on-the-fly tile cache; 0: 256 MiB */
    int readers;             /* slide readers open at once, all slides
                                together (each a private OpenSlide handle);
                                <= 0: cores + 1, at most 32 */
    int64_t overview_pixels; /* per slide: the overview (the Deep Zoom
                                level low levels are cut from) holds at
                                most this many pixels; 0: 16 Mi */
    int overviews;           /* overviews in memory at once (LRU); 0: 2 */
    int overview_threads;    /* readers building one; 0: cores */
    const char *asset_dir;   /* the browser assets' folder (static/NAME, or
                                OpenSeadragon under node_modules/ as npm
                                lays it out), the only one tried; NULL:
                                <folder of the running binary>/../share/
                                slidepipe/viewer when it holds them, else
                                the viewer/ folder of the source tree */
} sp_catalog_opts;

typedef struct sp_catalog sp_catalog;

/* Build the catalogue from command-line inputs: slide files (served on
 * the fly, with a sibling STEM.dzi / STEM.json / STEM.h5 used when
 * present), pyramids (X.dzi with X_files/, X.json, X.h5), or directories
 * scanned one level deep for batch outputs (D/<id>/slide.dzi), *.dzi and
 * slide files (symbolic links inside a directory are skipped). A named
 * input that cannot be used fails the whole call (SP_ERR_INPUT naming it);
 * unusable files found by a directory scan are skipped and listed as
 * warnings. Fails too when nothing is left to serve or the browser assets
 * (OpenSeadragon) are missing. */
bool sp_catalog_open(const char *const *inputs, size_t n,
                     const sp_catalog_opts *opts, sp_catalog **out,
                     sp_error *err);
/* Accepts NULL. Call after the server using it has stopped. */
void sp_catalog_close(sp_catalog *c);
size_t sp_catalog_count(const sp_catalog *c);
/* Id and display name of slide i (strings owned by the catalogue). */
const char *sp_catalog_id(const sp_catalog *c, size_t i);
const char *sp_catalog_name(const sp_catalog *c, size_t i);
/* Skipped inputs of directory scans, one line each ("PATH: cause"). */
size_t sp_catalog_warning_count(const sp_catalog *c);
const char *sp_catalog_warning(const sp_catalog *c, size_t i);

/* ---- the server --------------------------------------------------------- */

typedef struct {
    const char *listen;       /* numeric IPv4/IPv6 address; NULL: 127.0.0.1 */
    int port;                 /* 0: an ephemeral port */
    unsigned max_connections; /* open connections in all; 0: 256 */
    unsigned per_ip_connections; /* per client address; 0: 32 */
    unsigned threads;        /* worker threads of the event loop; 0: cores */
    unsigned timeout_s;      /* idle connection timeout; 0: 30 */
    unsigned head_timeout_s; /* a request head must be complete within
                                this many seconds of the connection or
                                of the previous response; 0: 10 */
    size_t memory_limit;     /* per connection, bounds the request head;
                                0: 32 KiB */
} sp_server_opts;

typedef struct sp_server sp_server;

/* Start serving `c` (not owned; keep it open until sp_server_stop): an
 * epoll event loop on `threads` worker threads (a request is handled on
 * the worker that owns its connection, so a tile being rendered holds
 * that worker), HTTP/1.1 keep-alive, and a timer thread that cuts
 * connections whose request head is late. NULL with `err` set
 * (SP_ERR_USAGE for a bad address, SP_ERR_OUTPUT when the port cannot be
 * bound). */
sp_server *sp_server_start(sp_catalog *c, const sp_server_opts *opts,
                           sp_error *err);
/* The port actually bound. */
int sp_server_port(const sp_server *s);
/* Connections cut so far for a late request head. */
uint64_t sp_server_deadline_cuts(sp_server *s);
/* Stop accepting, finish the open connections and free. Accepts NULL. */
void sp_server_stop(sp_server *s);

/* ---- the URL grammar ---------------------------------------------------- */

typedef enum {
    SP_ROUTE_INDEX = 1,    /* /                                        */
    SP_ROUTE_SLIDE_PAGE,   /* /slide/<id>                              */
    SP_ROUTE_API_SLIDES,   /* /api/slides                              */
    SP_ROUTE_API_SLIDE,    /* /api/slide/<id>                          */
    SP_ROUTE_API_FEATURES, /* /api/slide/<id>/features?x=&y=&w=&h=&feature= */
    SP_ROUTE_DZI,          /* /dzi/<id>.dzi                            */
    SP_ROUTE_TILE,         /* /dzi/<id>_files/<level>/<col>_<row>.<ext> */
    SP_ROUTE_STATIC,       /* /static/<asset>                          */
    SP_ROUTE_ASSOC         /* /assoc/<id>/<label|macro|thumbnail>.png  */
} sp_route_kind;

#define SP_ROUTE_MAX_URI 2048
#define SP_ROUTE_ID_MAX 64

typedef struct {
    sp_route_kind kind;
    char id[SP_ROUTE_ID_MAX + 1]; /* [A-Za-z0-9_-]{1,64}, no leading '-' */
    int level;                    /* tile */
    int64_t col, row;
    char ext[8];   /* tile: jpeg, png, webp */
    char name[32]; /* static asset or associated image */
    /* query (every route accepts v=<token>; features take the rest) */
    char version[33]; /* v=[0-9a-f]{1,32} */
    bool has_region;  /* x, y, w, h all given */
    int64_t x, y, w, h;
    char feature[64]; /* [A-Za-z_][A-Za-z0-9_.]* */
} sp_route;

/* Parse a request `method` and raw request-target `uri` (as received:
 * not percent-decoded). Returns the HTTP status: 200 with `out` filled
 * when the request matches the grammar; 405 for a method other than GET
 * or HEAD; 414 for a URI over SP_ROUTE_MAX_URI; 400 for a malformed
 * target (percent-escapes, "..", empty or repeated '/', control bytes,
 * bad numbers, unknown or repeated query keys); 404 for a well-formed
 * path that names nothing. Never reads past the NUL of `uri`. */
int sp_route_parse(const char *method, const char *uri, sp_route *out);

/* ---- versions ----------------------------------------------------------- */
/* Add the version of the loaded libmicrohttpd. */
void sp_viewer_versions(sp_lib_versions *l);

#ifdef __cplusplus
}
#endif
#endif
