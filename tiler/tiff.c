/* Pyramidal TIFF writer (libtiff): tiled, JPEG (YCbCr, self-contained
 * tiles from our encoder, written raw; with passthrough, level 0 holds
 * the slide's own tiles with their photometric and sampling), one
 * directory per level, BigTIFF
 * when the data could pass 4 GB. Level 0 carries an Aperio-style
 * ImageDescription ("Aperio ... |AppMag = 20|MPP = 0.499"), which is how
 * OpenSlide 3.4 learns mpp and magnification of a plain TIFF, and every
 * level resolution tags in pixels per centimetre for other readers. The
 * names of OUT.tiff and OUT.json come from layout.c.
 *
 * Tiles arrive from many threads in pyramid order, all levels at once,
 * while TIFF wants one directory at a time: workers append encoded tiles
 * to a spool file (an atomic offset, pwrite, no lock) and finish copies
 * them into the TIFF level by level.
 *
 * The OME-TIFF container (sp__ome_tiff_writer) is the same writer with
 * another directory layout: level 0 in the first directory, whose
 * ImageDescription is the OME-XML (ome.c) and whose SubIFD tag lists the
 * reduced levels, which follow as its sub-directories (libtiff writes the
 * next N directories as the SubIFDs named there). */
#include "tiler_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

typedef struct {
    uint64_t *off;
    uint32_t *len;
} tiff_index;

struct sp__writer {
    sp_pyramid *p;
    bool ome;             /* OME-TIFF: reduced levels as SubIFDs, OME-XML */
    sp_pyramid_names fin; /* final names: main (.tiff/.tif), sidecar */
    char *tmp_tiff, *tmp_json, *spool_name, *tmp_spool;
    int fd;
    sp__spool *spool;
    tiff_index idx[SP_TILER_MAX_LEVELS];
};

static void tw_free(sp__writer *w) {
    sp__spool_free(w->spool);
    if (w->fd >= 0)
        close(w->fd);
    for (int d = 0; d < SP_TILER_MAX_LEVELS; d++) {
        free(w->idx[d].off);
        free(w->idx[d].len);
    }
    sp_pyramid_names_free(&w->fin);
    free(w->tmp_tiff);
    free(w->tmp_json);
    free(w->spool_name);
    free(w->tmp_spool);
    free(w);
}

static void tw_abort(sp__writer *w) {
    if (!w)
        return;
    if (w->tmp_spool)
        remove(w->tmp_spool);
    if (w->tmp_tiff)
        remove(w->tmp_tiff);
    if (w->tmp_json)
        remove(w->tmp_json);
    tw_free(w);
}

static sp__writer *tw_open(sp_pyramid *p, bool ome, sp_error *err) {
    const char *out = sp__pyramid_output(p);
    sp__writer *w = calloc(1, sizeof *w);
    if (!w) {
        sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
        return NULL;
    }
    w->p = p;
    w->ome = ome;
    w->fd = -1;
    if (!sp_pyramid_names_of(&w->fin, out,
                             ome ? SP_CONTAINER_OME_TIFF : SP_CONTAINER_TIFF))
        goto oom;
    size_t n = strlen(w->fin.main) + 8;
    w->spool_name = malloc(n);
    if (!w->spool_name)
        goto oom;
    snprintf(w->spool_name, n, "%s.spool", w->fin.main);
    if (!p->prm.opts.force && sp_path_exists(w->fin.main)) {
        sp_error_set(err, SP_ERR_OUTPUT, w->fin.main,
                     "already exists (use --force to replace it)");
        goto fail;
    }
    sp__tiler_clean_stale(w->fin.main);
    sp__tiler_clean_stale(w->fin.sidecar);
    sp__tiler_clean_stale(w->spool_name);
    w->tmp_tiff = sp__tiler_temp_name(w->fin.main);
    w->tmp_json = sp__tiler_temp_name(w->fin.sidecar);
    w->tmp_spool = sp__tiler_temp_name(w->spool_name);
    p->final_main = strdup(w->fin.main);
    if (!w->tmp_tiff || !w->tmp_json || !w->tmp_spool || !p->final_main)
        goto oom;
    for (int d = 0; d < p->nlevels; d++) {
        size_t k = (size_t)(p->lv[d].cols * p->lv[d].rows);
        w->idx[d].off = calloc(k, sizeof *w->idx[d].off);
        w->idx[d].len = calloc(k, sizeof *w->idx[d].len);
        if (!w->idx[d].off || !w->idx[d].len)
            goto oom;
    }
    w->fd = open(w->tmp_spool, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno, "cannot create");
        free(w->tmp_spool);
        w->tmp_spool = NULL;
        goto fail;
    }
    w->spool = sp__spool_create(w->fd, p->threads);
    if (!w->spool)
        goto oom;
    return w;
oom:
    sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
fail:
    tw_abort(w);
    return NULL;
}

static sp__writer *tw_open_tiff(sp_pyramid *p, sp_error *err) {
    return tw_open(p, false, err);
}

static sp__writer *tw_open_ome(sp_pyramid *p, sp_error *err) {
    return tw_open(p, true, err);
}

static bool tw_put(sp__writer *w, int t, int d, int64_t col, int64_t row,
                   const uint8_t *data, size_t n, sp_error *err) {
    int64_t i = row * w->p->lv[d].cols + col;
    w->idx[d].len[i] = (uint32_t)n;
    /* its offset lands in the index when its run is written */
    return sp__spool_put(w->spool, t, data, n, false, &w->idx[d].off[i],
                         w->fin.main, err);
}

/* libtiff's own words for the failure of the call just made (libtiff
 * prints nothing: its errors are captured per thread, see
 * sp_libtiff_quiet), or a plain cause when it gave none. */
static const char *tiff_cause(void) {
    const char *m = sp_captured();
    return m ? m : "no cause given by libtiff";
}

static bool tw_finish(sp__writer *w, const char *sidecar, size_t sidecar_n,
                      sp_error *err) {
    const sp_pyramid *p = w->p;
    const sp_source_info *src = &p->prm.source;
    TIFF *tif = NULL;
    uint8_t *buf = NULL;
    size_t cap = 0;
    sp_buf ome_xml;
    sp_buf_init(&ome_xml);
    if (w->ome) {
        /* the name the file will have: a staged output is renamed by the
         * caller */
        const char *name = p->prm.final_main ? p->prm.final_main : w->fin.main;
        char uuid[46];
        if (!sp__ome_uuid(uuid)) {
            sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno,
                           "cannot draw a UUID for the OME-XML");
            goto fail;
        }
        if (!sp__ome_xml(p, name, uuid, &ome_xml)) {
            sp_error_set(err, SP_ERR_NOMEM, w->fin.main, "out of memory");
            goto fail;
        }
    }
    sp_libtiff_quiet();
    if (!sp__spool_flush(w->spool, w->fin.main, err))
        goto fail;
    bool big = sp__spool_size(w->spool) > UINT64_C(0xE0000000);
    sp_capture_clear();
    tif = TIFFOpen(w->tmp_tiff, big ? "w8" : "w");
    if (!tif) {
        sp_error_set(err, SP_ERR_OUTPUT, w->fin.main, "cannot create TIFF: %s",
                     tiff_cause());
        goto fail;
    }
    int quality = p->prm.opts.quality;
    int sub = quality >= 90 ? 1 : 2; /* as the encoder */
    for (int d = 0; d < p->nlevels; d++) {
        const sp__plevel *L = &p->lv[d];
        TIFFSetField(tif, TIFFTAG_SUBFILETYPE, d ? FILETYPE_REDUCEDIMAGE : 0);
        TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)L->w);
        TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)L->h);
        TIFFSetField(tif, TIFFTAG_TILEWIDTH, (uint32_t)p->T);
        TIFFSetField(tif, TIFFTAG_TILELENGTH, (uint32_t)p->T);
        TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8);
        TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, 3);
        TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
        TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG);
        TIFFSetField(tif, TIFFTAG_JPEGTABLESMODE, 0);
        if (d == 0 && p->copy0 && p->stored0.rgb) {
            /* the slide's tiles as stored: RGB components (Aperio) */
            TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
        } else if (d == 0 && p->copy0) {
            TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR);
            TIFFSetField(tif, TIFFTAG_YCBCRSUBSAMPLING, p->stored0.h_samp,
                         p->stored0.v_samp);
        } else {
            TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR);
            TIFFSetField(tif, TIFFTAG_YCBCRSUBSAMPLING, sub, sub);
        }
        TIFFSetField(tif, TIFFTAG_SOFTWARE, "slidepipe " SP_VERSION);
        if (src->mpp_x > 0 && src->mpp_y > 0) {
            double f = (double)((int64_t)1 << d);
            TIFFSetField(tif, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER);
            TIFFSetField(tif, TIFFTAG_XRESOLUTION, 1e4 / (src->mpp_x * f));
            TIFFSetField(tif, TIFFTAG_YRESOLUTION, 1e4 / (src->mpp_y * f));
        }
        if (d == 0 && w->ome) {
            TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, ome_xml.data);
            /* the next nlevels - 1 directories become level 0's SubIFDs
             * (libtiff fills in their offsets) */
            uint64_t subifd[SP_TILER_MAX_LEVELS] = {0};
            if (p->nlevels > 1)
                TIFFSetField(tif, TIFFTAG_SUBIFD, (uint16_t)(p->nlevels - 1),
                             subifd);
        } else if (d == 0) {
            char desc[512];
            int k =
                snprintf(desc, sizeof desc,
                         "Aperio Image Library compatible (slidepipe %s)"
                         "\r\n%lldx%lld [0,0 %lldx%lld] (%dx%d) JPEG/RGB "
                         "Q=%d",
                         SP_VERSION, (long long)L->w, (long long)L->h,
                         (long long)L->w, (long long)L->h, p->T, p->T, quality);
            if (src->objective_power > 0)
                k += snprintf(desc + k, sizeof desc - (size_t)k, "|AppMag = %g",
                              src->objective_power);
            if (src->mpp_x > 0)
                k += snprintf(desc + k, sizeof desc - (size_t)k, "|MPP = %.6g",
                              src->mpp_x);
            TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, desc);
        }
        int64_t ntiles = L->cols * L->rows;
        for (int64_t i = 0; i < ntiles; i++) {
            uint32_t len = w->idx[d].len[i];
            if (len == 0) {
                sp_error_set(err, SP_ERR_INTERNAL, w->fin.main,
                             "level %d tile %lld missing", d, (long long)i);
                goto fail;
            }
            if (len > cap) {
                uint8_t *b = realloc(buf, len);
                if (!b) {
                    sp_error_set(err, SP_ERR_NOMEM, w->fin.main,
                                 "out of memory");
                    goto fail;
                }
                buf = b;
                cap = len;
            }
            size_t got = 0;
            while (got < len) {
                ssize_t k = pread(w->fd, buf + got, len - got,
                                  (off_t)(w->idx[d].off[i] + got));
                if (k <= 0) {
                    if (k < 0 && errno == EINTR)
                        continue;
                    sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main,
                                   k < 0 ? errno : EIO, "spool read failed");
                    goto fail;
                }
                got += (size_t)k;
            }
            sp_capture_clear();
            if (TIFFWriteRawTile(tif, (uint32_t)i, buf, len) < 0) {
                sp_error_set(err, SP_ERR_OUTPUT, w->fin.main,
                             "cannot write tile %lld of level %d: %s",
                             (long long)i, d, tiff_cause());
                goto fail;
            }
        }
        sp_capture_clear();
        if (!TIFFWriteDirectory(tif)) {
            sp_error_set(err, SP_ERR_OUTPUT, w->fin.main,
                         "cannot write directory %d: %s", d, tiff_cause());
            goto fail;
        }
    }
    sp_capture_clear();
    if (!TIFFFlush(tif)) {
        sp_error_set(err, SP_ERR_OUTPUT, w->fin.main,
                     "cannot finish the TIFF: %s", tiff_cause());
        goto fail;
    }
    TIFFClose(tif);
    tif = NULL;
    free(buf);
    buf = NULL;
    sp_buf_free(&ome_xml);
    if (!sp__write_file(w->tmp_json, (const uint8_t *)sidecar, sidecar_n, err))
        goto fail;
    if (rename(w->tmp_tiff, w->fin.main) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno, "cannot rename");
        goto fail;
    }
    free(w->tmp_tiff);
    w->tmp_tiff = NULL;
    if (rename(w->tmp_json, w->fin.sidecar) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.sidecar, errno,
                       "cannot rename");
        remove(w->fin.main);
        goto fail;
    }
    free(w->tmp_json);
    w->tmp_json = NULL;
    remove(w->tmp_spool);
    free(w->tmp_spool);
    w->tmp_spool = NULL;
    tw_free(w);
    return true;
fail:
    if (tif)
        TIFFClose(tif);
    free(buf);
    sp_buf_free(&ome_xml);
    tw_abort(w);
    return false;
}

const sp__writer_ops sp__tiff_writer = {
    .name = "tiff",
    .open = tw_open_tiff,
    .put = tw_put,
    .finish = tw_finish,
    .abort = tw_abort,
};

const sp__writer_ops sp__ome_tiff_writer = {
    .name = "ome-tiff",
    .open = tw_open_ome,
    .put = tw_put,
    .finish = tw_finish,
    .abort = tw_abort,
};
