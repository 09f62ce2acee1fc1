/* DICOM whole-slide images (VL Whole Slide Microscopy, Supplement 145):
 * a series (a folder, or any one of its files) read through DCMTK, behind
 * the C API of ingest_private.h. OpenSlide 3.4.1 cannot read them.
 *
 *   instances  the files of the folder whose SOP class is VL WSM and
 *              whose SeriesInstanceUID is the one asked for; ImageType's
 *              third value VOLUME (or none) makes a level, LABEL, OVERVIEW
 *              and THUMBNAIL associated images ("label", "macro",
 *              "thumbnail"); instances of one size are one level
 *              (concatenations: ConcatenationFrameOffsetNumber)
 *   frames     TILED_FULL (row-major tiles of the first focal plane and
 *              optical path), or per-frame positions (PlanePositionSlide
 *              in the per-frame functional groups: TILED_SPARSE, and
 *              writers that omit DimensionOrganizationType); tiles with no
 *              frame are background
 *   pixels     JPEG baseline (RGB, YBR_FULL, YBR_FULL_422), decoded here
 *              with libjpeg-turbo as strictly as the TIFF path (a corrupt
 *              frame is an error); JPEG 2000 (lossless and lossy, with
 *              Debian's OpenJPEG); native 8-bit RGB (explicit or implicit
 *              VR little endian). Anything else: an error naming the file
 *              and what is unsupported.
 *
 * DCMTK loads each file with a small maximum read length: pixel data and
 * every fragment stay on disk and one frame's bytes are fetched when a
 * tile needs them: with pread at the fragments' file offsets, found once
 * at open (locate_items), without a lock; where they cannot be found,
 * through DCMTK's getPartialValue under the instance's lock (its objects
 * are not shared between threads otherwise). Sizes read from the
 * files are checked before anything is allocated from them. */
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfcache.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <jpeglib.h>
#include <openjpeg.h>

extern "C" {
#include "ingest_private.h"
}

namespace {

const int64_t MAX_EDGE = INT64_C(1) << 24;   /* pixels a side */
const int64_t MAX_TILE = 16384;              /* a frame's edge */
const int64_t MAX_FRAMES = INT64_C(1) << 24; /* frames an instance */
const size_t MAX_FILES = 100000;             /* files a folder */
const Uint32 MAX_READ = 4096;                /* bytes DCMTK loads */

enum class px { jpeg, j2k, native };

struct instance {
    std::string path;
    DcmFileFormat ff;
    DcmDataset *ds = nullptr;
    px kind = px::jpeg;
    bool ycc = false; /* JPEG frames in YCbCr (YBR_*) rather than RGB */
    Uint32 frames = 0;
    int64_t tw = 0, th = 0;          /* Columns, Rows */
    int64_t w = 0, h = 0;            /* TotalPixelMatrixColumns, Rows */
    Uint32 offset = 0;               /* ConcatenationFrameOffsetNumber */
    std::string type;                /* VOLUME, LABEL, OVERVIEW, THUMBNAIL */
    DcmPixelSequence *seq = nullptr; /* encapsulated fragments */
    DcmElement *native = nullptr;    /* native pixel data */
    /* fragment range of each frame: [first, first + count) */
    std::vector<Uint32> frag_first, frag_count;
    /* where each item of the pixel data sequence lies in the file (item
     * 0: the offset table), found once (locate_items): frames are then
     * read with pread, no lock; empty: through DCMTK, under `mu` */
    std::vector<uint64_t> item_off;
    std::vector<Uint32> item_len;
    /* the items themselves, for the DCMTK path (getItem(i) walks the
     * list from its start: quadratic over a whole read) */
    std::vector<DcmPixelItem *> items;
    int fd = -1;
    std::mutex mu;
    ~instance() {
        if (fd >= 0)
            close(fd);
    }
};

struct tile_ref {
    int32_t inst = -1; /* -1: no frame, background */
    Uint32 frame = 0;
};

struct level {
    int64_t w = 0, h = 0, tw = 0, th = 0, cols = 0, rows = 0;
    std::vector<tile_ref> tiles;
};

std::once_flag quiet_once;

/* DCMTK logs to stderr by default: library code must not print. */
void quiet_dcmtk() {
    std::call_once(quiet_once,
                   [] { OFLog::configure(OFLogger::OFF_LOG_LEVEL); });
}

bool has_dicm_magic(const char *path) {
    FILE *f = std::fopen(path, "rb");
    if (!f)
        return false;
    char b[132];
    bool ok = std::fread(b, 1, sizeof b, f) == sizeof b &&
              std::memcmp(b + 128, "DICM", 4) == 0;
    std::fclose(f);
    return ok;
}

/* Whether `path` is a DICOM file (has_dicm_magic) that may belong to
 * `series` (any series when empty), from one read of its first 64 KiB,
 * before DCMTK parses it: a folder exported from a PACS holds many
 * series, and every one opened would otherwise parse every file's
 * header. Not of the series only when the UID is not there and the
 * Pixel Data tag is (a dataset's tags ascend, so (0020,000E) precedes
 * (7FE0,0010)); DCMTK then checks the files that pass exactly. */
bool may_hold_series(const char *path, const std::string &series) {
    FILE *f = std::fopen(path, "rb");
    if (!f)
        return false;
    std::vector<char> b(series.empty() ? 132 : 64 << 10);
    size_t n = std::fread(b.data(), 1, b.size(), f);
    std::fclose(f);
    if (n < 132 || std::memcmp(b.data() + 128, "DICM", 4) != 0)
        return false;
    auto has = [&](const char *s, size_t k) {
        return std::search(b.begin(), b.begin() + (long)n, s, s + k) !=
               b.begin() + (long)n;
    };
    return series.empty() || has(series.data(), series.size()) ||
           !has("\xE0\x7F\x10\x00", 4);
}

std::string str_of(DcmItem *it, const DcmTagKey &k, int pos = 0) {
    OFString v;
    if (it && it->findAndGetOFString(k, v, pos).good())
        return std::string(v.c_str());
    return std::string();
}

bool int_of(DcmItem *it, const DcmTagKey &k, int64_t *out) {
    Uint32 u32;
    Uint16 u16;
    Sint32 s32;
    if (it->findAndGetUint32(k, u32).good()) {
        *out = u32;
        return true;
    }
    if (it->findAndGetUint16(k, u16).good()) {
        *out = u16;
        return true;
    }
    if (it->findAndGetSint32(k, s32).good()) {
        *out = s32;
        return true;
    }
    OFString s;
    if (it->findAndGetOFString(k, s).good() && !s.empty()) {
        char *end = nullptr;
        long long v = std::strtoll(s.c_str(), &end, 10);
        if (end && *end == '\0') {
            *out = v;
            return true;
        }
    }
    return false;
}

/* The first item of sequence `k` in `it`, or NULL. */
DcmItem *first_item(DcmItem *it, const DcmTagKey &k) {
    DcmItem *out = nullptr;
    if (it && it->findAndGetSequenceItem(k, out, 0).good())
        return out;
    return nullptr;
}

} // namespace

struct sp__dicom {
    std::string dir, series;
    std::vector<instance *> inst;
    std::vector<level> levels;
    std::vector<int> assoc_inst; /* instance of each associated image */
    std::vector<std::string> prop_names, prop_values;
    std::string quickhash;
    bool half_ok = false; /* sp__dicom_can_half, found at open */
    ~sp__dicom() {
        for (instance *i : inst)
            delete i;
    }
};

struct sp__dicom_reader {
    const sp__dicom *d;
    jpeg_decompress_struct cinfo;
    struct err_mgr {
        jpeg_error_mgr pub;
        jmp_buf jb;
        char msg[JMSG_LENGTH_MAX];
    } jerr;
    bool cinfo_ok = false;
    std::vector<Uint8> data; /* a frame's compressed bytes */
    std::vector<uint8_t> tile;
    int32_t cached_inst = -1; /* the frame decoded in `tile` */
    Uint32 cached_frame = 0;
    DcmFileCache cache;
    sp__memo *memo = nullptr; /* frames whose bytes repeat, decoded once */
};

namespace {

void jerr_exit(j_common_ptr c) {
    auto *e = reinterpret_cast<sp__dicom_reader::err_mgr *>(c->err);
    (*c->err->format_message)(c, e->msg);
    std::longjmp(e->jb, 1);
}

/* libjpeg's warnings (corrupt data, premature end) are errors here: a
 * damaged frame must not come out as plausible pixels */
void jerr_emit(j_common_ptr c, int lvl) {
    if (lvl < 0)
        jerr_exit(c);
}

void jerr_output(j_common_ptr) {}

/* The pixel item after *at (the first when *at is null), *at moved to
 * it; null at the end. In order, one step each: DCMTK's getItem(i) walks
 * its item list from the start every time, which made opening a level of
 * 14,000 frames take 0.3 s (quadratic in the frames). */
DcmPixelItem *next_item(DcmPixelSequence *seq, DcmObject **at) {
    *at = seq->nextInContainer(*at);
    return dynamic_cast<DcmPixelItem *>(*at);
}

/* Fill frag_first/frag_count: which fragments make each frame. */
bool map_fragments(instance *in, std::string *why) {
    unsigned long n = in->seq->card();
    if (n < 2) {
        *why = "no pixel data fragments";
        return false;
    }
    const unsigned long frags = n - 1; /* item 0: the basic offset table */
    in->frag_first.resize(in->frames);
    in->frag_count.resize(in->frames);
    if (frags == in->frames) {
        for (Uint32 f = 0; f < in->frames; f++) {
            in->frag_first[f] = f + 1;
            in->frag_count[f] = 1;
        }
        return true;
    }
    if (in->frames == 1) {
        in->frag_first[0] = 1;
        in->frag_count[0] = (Uint32)frags;
        return true;
    }
    /* several fragments a frame: the basic offset table says where each
     * frame starts, in bytes from the first fragment's item tag */
    DcmPixelItem *bot = nullptr;
    Uint8 *tab = nullptr;
    if (in->seq->getItem(bot, 0).bad() || !bot ||
        bot->getLength() != 4 * in->frames || bot->getUint8Array(tab).bad() ||
        !tab) {
        *why = std::to_string(frags) + " fragments for " +
               std::to_string(in->frames) +
               " frames and no basic offset table to tell them apart";
        return false;
    }
    std::vector<Uint32> starts(in->frames);
    for (Uint32 f = 0; f < in->frames; f++) {
        Uint32 v;
        std::memcpy(&v, tab + 4 * f, 4); /* little endian on disk */
        starts[f] = v;
    }
    Uint64 pos = 0;
    Uint32 f = 0;
    DcmObject *at = bot;
    for (unsigned long i = 1; i <= frags; i++) {
        auto *it = next_item(in->seq, &at);
        if (!it) {
            *why = "fragment " + std::to_string(i) + " unreadable";
            return false;
        }
        while (f < in->frames && starts[f] == pos) {
            in->frag_first[f] = (Uint32)i;
            in->frag_count[f] = 0;
            f++;
        }
        if (f == 0) {
            *why = "the basic offset table does not start at 0";
            return false;
        }
        in->frag_count[f - 1]++;
        pos += 8 + it->getLength();
    }
    if (f != in->frames) {
        *why = "the basic offset table points past the fragments";
        return false;
    }
    return true;
}

/* Where the items of the pixel data sequence lie in the file. DCMTK
 * reads them lazily but does not say where they are, and fetching each
 * frame through it (getPartialValue) walks its item list and reopens the
 * stream: the encapsulated Pixel Data element is found in the first
 * 256 MiB instead (explicit VR little endian, as encapsulation requires:
 * the tag, "OB", undefined length, then the items), and taken only when
 * every item's tag and length there equal DCMTK's. Anything else keeps
 * the DCMTK path. */
void locate_items(instance *in) {
    const unsigned long n = in->seq->card();
    std::vector<Uint32> lens(n);
    std::vector<DcmPixelItem *> items(n);
    DcmObject *at = nullptr;
    for (unsigned long i = 0; i < n; i++) {
        auto *it = next_item(in->seq, &at);
        if (!it)
            return;
        lens[i] = it->getLength();
        items[i] = it;
    }
    in->items = std::move(items);
    int fd = open(in->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return;
    }
    const uint64_t size = (uint64_t)st.st_size;
    static const Uint8 head[] = {0xE0, 0x7F, 0x10, 0x00, 'O',  'B',
                                 0,    0,    0xFF, 0xFF, 0xFF, 0xFF};
    const size_t CH = 1 << 20, HL = sizeof head;
    std::vector<Uint8> buf(CH + HL);
    auto item_at = [&](uint64_t pos, Uint32 *len) {
        Uint8 b[8];
        if (pread(fd, b, 8, (off_t)pos) != 8 ||
            std::memcmp(b, "\xFE\xFF\x00\xE0", 4) != 0)
            return false;
        std::memcpy(len, b + 4, 4);
        return true;
    };
    for (uint64_t base = 0; base < size && base < (UINT64_C(256) << 20);
         base += CH) {
        ssize_t got = pread(fd, buf.data(), CH + HL, (off_t)base);
        if (got < (ssize_t)HL)
            break;
        for (size_t i = 0; i + HL <= (size_t)got; i++) {
            if (buf[i] != 0xE0 || std::memcmp(&buf[i], head, HL) != 0)
                continue;
            std::vector<uint64_t> off(n);
            uint64_t pos = base + i + HL;
            bool ok = true;
            for (unsigned long k = 0; k < n && ok; k++) {
                Uint32 len = 0;
                ok = item_at(pos, &len) && len == lens[k] &&
                     pos + 8 + len <= size;
                off[k] = pos + 8;
                pos += 8 + (uint64_t)len;
            }
            if (ok) {
                in->item_off = std::move(off);
                in->item_len = std::move(lens);
                in->fd = fd;
                return;
            }
        }
    }
    close(fd);
}

/* The fragments of compressed pixel data `pd` (kind `what`), mapped to
 * frames. */
bool encapsulated(instance *in, DcmElement *pd, const char *what,
                  std::string *why) {
    E_TransferSyntax x = EXS_Unknown;
    const DcmRepresentationParameter *rp = nullptr;
    auto *pix = OFstatic_cast(DcmPixelData *, pd);
    pix->getOriginalRepresentationKey(x, rp);
    if (pix->getEncapsulatedRepresentation(x, rp, in->seq).bad() || !in->seq) {
        *why = std::string(what) + " pixel data is not encapsulated";
        return false;
    }
    if (!map_fragments(in, why))
        return false;
    locate_items(in);
    return true;
}

/* Read what slidepipe needs of one instance (its dataset is loaded). */
bool describe(instance *in, std::string *why) {
    DcmDataset *ds = in->ds;
    E_TransferSyntax xfer = ds->getOriginalXfer();
    int64_t v;
    if (!int_of(ds, DCM_Columns, &in->tw) || !int_of(ds, DCM_Rows, &in->th) ||
        in->tw < 1 || in->th < 1 || in->tw > MAX_TILE || in->th > MAX_TILE) {
        *why = "no valid Rows/Columns";
        return false;
    }
    in->frames = 1;
    if (int_of(ds, DCM_NumberOfFrames, &v)) {
        if (v < 1 || v > MAX_FRAMES) {
            *why = "NumberOfFrames " + std::to_string(v) + " out of range";
            return false;
        }
        in->frames = (Uint32)v;
    }
    if (!int_of(ds, DCM_TotalPixelMatrixColumns, &in->w) ||
        !int_of(ds, DCM_TotalPixelMatrixRows, &in->h)) {
        /* a single image without the WSI modules */
        if (in->frames != 1) {
            *why = "no TotalPixelMatrixColumns/Rows";
            return false;
        }
        in->w = in->tw;
        in->h = in->th;
    }
    if (in->w < 1 || in->h < 1 || in->w > MAX_EDGE || in->h > MAX_EDGE) {
        *why = "total pixel matrix " + std::to_string(in->w) + "x" +
               std::to_string(in->h) + " out of range";
        return false;
    }
    int64_t spp = 0, bits = 0;
    if (!int_of(ds, DCM_SamplesPerPixel, &spp) || spp != 3 ||
        !int_of(ds, DCM_BitsAllocated, &bits) || bits != 8) {
        *why = "only 8-bit colour (3 samples) is supported";
        return false;
    }
    std::string pi = str_of(ds, DCM_PhotometricInterpretation);
    if (int_of(ds, DCM_ConcatenationFrameOffsetNumber, &v) && v >= 0 &&
        v <= MAX_FRAMES)
        in->offset = (Uint32)v;
    in->type = str_of(ds, DCM_ImageType, 2);
    DcmElement *pd = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, pd).bad() || !pd) {
        *why = "no pixel data";
        return false;
    }
    if (xfer == EXS_JPEGProcess1) {
        if (pi != "RGB" && pi != "YBR_FULL_422" && pi != "YBR_FULL") {
            *why = "JPEG with photometric interpretation '" + pi +
                   "' is not supported";
            return false;
        }
        in->kind = px::jpeg;
        in->ycc = pi != "RGB";
        return encapsulated(in, pd, "JPEG", why);
    }
    if (xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000) {
        /* OpenJPEG undoes the codestream's own colour transform (YBR_ICT,
         * YBR_RCT); RGB stays RGB */
        in->kind = px::j2k;
        return encapsulated(in, pd, "JPEG 2000", why);
    }
    if (xfer == EXS_LittleEndianExplicit || xfer == EXS_LittleEndianImplicit) {
        if (pi != "RGB") {
            *why = "native pixel data in '" + pi + "' is not supported";
            return false;
        }
        int64_t planar = 0;
        if (int_of(ds, DCM_PlanarConfiguration, &planar) && planar != 0) {
            *why = "planar (colour-by-plane) pixel data is not supported";
            return false;
        }
        if ((Uint64)pd->getLength() <
            (Uint64)in->frames * (Uint64)in->tw * (Uint64)in->th * 3) {
            *why = "pixel data shorter than " + std::to_string(in->frames) +
                   " frames";
            return false;
        }
        in->kind = px::native;
        in->native = pd;
        return true;
    }
    DcmXfer xf(xfer);
    *why = std::string("transfer syntax ") + xf.getXferName() + " (" +
           xf.getXferID() + ") is not supported";
    return false;
}

/* The tile grid of `in`'s pixel matrix (no tiles placed yet). */
level grid_of(const instance *in) {
    level lv;
    lv.w = in->w;
    lv.h = in->h;
    lv.tw = in->tw;
    lv.th = in->th;
    lv.cols = (in->w + in->tw - 1) / in->tw;
    lv.rows = (in->h + in->th - 1) / in->th;
    return lv;
}

/* Place the frames of `in` on the tile grid of `lv`. */
bool place(const sp__dicom *d, int index, instance *in, level *lv,
           std::string *why) {
    DcmDataset *ds = in->ds;
    std::string org = str_of(ds, DCM_DimensionOrganizationType);
    DcmItem *pf0 = first_item(ds, DCM_PerFrameFunctionalGroupsSequence);
    bool sparse = org == "TILED_SPARSE" ||
                  (org != "TILED_FULL" && pf0 &&
                   first_item(pf0, DCM_PlanePositionSlideSequence));
    (void)d;
    if (!sparse) {
        /* row-major from the concatenation's offset; the first plane */
        for (Uint32 f = 0; f < in->frames; f++) {
            Uint64 t = (Uint64)in->offset + f;
            if (t >= lv->tiles.size())
                break; /* other focal planes or optical paths */
            lv->tiles[t].inst = index;
            lv->tiles[t].frame = f;
        }
        return true;
    }
    DcmSequenceOfItems *seq = nullptr;
    if (ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, seq)
            .bad() ||
        !seq || seq->card() != in->frames) {
        *why = "TILED_SPARSE without a per-frame position for every frame";
        return false;
    }
    std::string plane0;
    for (Uint32 f = 0; f < in->frames; f++) {
        DcmItem *pos =
            first_item(seq->getItem(f), DCM_PlanePositionSlideSequence);
        int64_t c = 0, r = 0;
        if (!pos ||
            !int_of(pos, DCM_ColumnPositionInTotalImagePixelMatrix, &c) ||
            !int_of(pos, DCM_RowPositionInTotalImagePixelMatrix, &r)) {
            *why = "frame " + std::to_string(f + 1) + " has no position";
            return false;
        }
        /* the first focal plane only */
        std::string z = str_of(pos, DCM_ZOffsetInSlideCoordinateSystem);
        if (f == 0)
            plane0 = z;
        else if (z != plane0)
            continue;
        if (c < 1 || r < 1 || (c - 1) % in->tw || (r - 1) % in->th)
            continue; /* off the grid: not a tile of this level */
        int64_t tx = (c - 1) / in->tw, ty = (r - 1) / in->th;
        if (tx >= lv->cols || ty >= lv->rows)
            continue;
        tile_ref &t = lv->tiles[(size_t)(ty * lv->cols + tx)];
        t.inst = index;
        t.frame = f;
    }
    return true;
}

void add_prop(sp__dicom *d, const char *name, const std::string &v) {
    if (v.empty())
        return;
    d->prop_names.push_back(name);
    d->prop_values.push_back(v);
}

/* The files of the series: those of `dir` (or `only`) whose series is
 * `series` (the first WSI series found when empty). */
bool load_series(sp__dicom *d, const std::string &only, sp_error *err,
                 const char *path) {
    std::vector<std::string> files;
    if (!only.empty()) {
        files.push_back(only);
    }
    DIR *dh = opendir(d->dir.c_str());
    if (!dh)
        return sp_error_errno(err, SP_ERR_INPUT, path, errno,
                              "cannot list the series' folder");
    struct dirent *e;
    while ((e = readdir(dh)) != nullptr) {
        if (e->d_name[0] == '.')
            continue;
        std::string p = d->dir + "/" + e->d_name;
        if (p == only)
            continue;
        struct stat st;
        if (stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (files.size() >= MAX_FILES) {
            closedir(dh);
            return sp_error_set(err, SP_ERR_INPUT, path,
                                "more than %zu files in the series' folder",
                                MAX_FILES);
        }
        files.push_back(p);
    }
    closedir(dh);
    /* the file asked for first, then in name order */
    std::sort(files.begin() + (only.empty() ? 0 : 1), files.end());
    for (const std::string &p : files) {
        if (!may_hold_series(p.c_str(), p == only ? std::string() : d->series))
            continue;
        auto *in = new instance;
        in->path = p;
        OFCondition c = in->ff.loadFile(p.c_str(), EXS_Unknown, EGL_noChange,
                                        MAX_READ, ERM_autoDetect);
        in->ds = in->ff.getDataset();
        if (c.bad() || !in->ds) {
            delete in;
            if (p == only)
                return sp_error_set(err, SP_ERR_INPUT, path,
                                    "not a readable DICOM file: %s", c.text());
            continue;
        }
        std::string sop = str_of(in->ds, DCM_SOPClassUID);
        std::string series = str_of(in->ds, DCM_SeriesInstanceUID);
        if (sop != UID_VLWholeSlideMicroscopyImageStorage ||
            (!d->series.empty() && series != d->series)) {
            delete in;
            if (p == only)
                return sp_error_set(
                    err, SP_ERR_INPUT, path,
                    "a DICOM file, but not a whole-slide image (SOP class %s)",
                    sop.empty() ? "missing" : sop.c_str());
            continue;
        }
        d->series = series;
        d->inst.push_back(in);
    }
    if (d->inst.empty())
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "no DICOM whole-slide image in this folder");
    return true;
}

} // namespace

extern "C" bool sp__dicom_candidate(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    if (S_ISREG(st.st_mode))
        return has_dicm_magic(path);
    if (!S_ISDIR(st.st_mode))
        return false;
    DIR *dh = opendir(path);
    if (!dh)
        return false;
    bool found = false;
    struct dirent *e;
    for (size_t n = 0; !found && n < 64 && (e = readdir(dh)) != nullptr; n++) {
        if (e->d_name[0] == '.')
            continue;
        std::string p = std::string(path) + "/" + e->d_name;
        found = has_dicm_magic(p.c_str());
    }
    closedir(dh);
    return found;
}

extern "C" char *sp__dicom_series_of(const char *path) {
    quiet_dcmtk();
    if (!has_dicm_magic(path))
        return nullptr;
    DcmFileFormat ff;
    if (ff.loadFile(path, EXS_Unknown, EGL_noChange, MAX_READ, ERM_autoDetect)
            .bad())
        return nullptr;
    std::string sop = str_of(ff.getDataset(), DCM_SOPClassUID);
    std::string s = str_of(ff.getDataset(), DCM_SeriesInstanceUID);
    if (sop != UID_VLWholeSlideMicroscopyImageStorage || s.empty())
        return nullptr;
    return strdup(s.c_str());
}

/* Whether level 0 reads at half size: every frame of it JPEG of the
 * level's tile size, which is even (sp__dicom_can_half; once, at open). */
static bool half_readable(const sp__dicom *d) {
    if (d->levels.empty())
        return false;
    const level &lv = d->levels[0];
    if (lv.tw % 2 || lv.th % 2)
        return false;
    for (const tile_ref &t : lv.tiles) {
        const instance *in = t.inst >= 0 ? d->inst[(size_t)t.inst] : nullptr;
        if (in && (in->kind != px::jpeg || in->tw != lv.tw || in->th != lv.th))
            return false;
    }
    return true;
}

extern "C" bool sp__dicom_open(sp_slide *s, const char *path, sp_error *err) {
    quiet_dcmtk();
    auto *d = new (std::nothrow) sp__dicom;
    if (!d)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    struct stat st;
    std::string only;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        d->dir = path;
    } else {
        only = path;
        const char *slash = std::strrchr(path, '/');
        d->dir = slash ? std::string(path, (size_t)(slash - path)) : ".";
        if (d->dir.empty())
            d->dir = "/";
    }
    std::vector<int> vol;
    std::string why;
    try {
        if (!load_series(d, only, err, path)) {
            delete d;
            return false;
        }
        for (size_t i = 0; i < d->inst.size(); i++) {
            instance *in = d->inst[i];
            if (!describe(in, &why)) {
                sp_error_set(err, SP_ERR_INPUT, path, "%s: %s",
                             sp_basename(in->path.c_str()), why.c_str());
                delete d;
                return false;
            }
            if (in->type.empty() || in->type == "VOLUME")
                vol.push_back((int)i);
            else if (in->type == "LABEL" || in->type == "OVERVIEW" ||
                     in->type == "THUMBNAIL")
                d->assoc_inst.push_back((int)i);
        }
    } catch (const std::bad_alloc &) {
        delete d;
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    if (vol.empty()) {
        delete d;
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "the series has no VOLUME image");
    }
    /* levels: one per size, largest first */
    std::sort(vol.begin(), vol.end(), [d](int a, int b) {
        return d->inst[a]->w != d->inst[b]->w ? d->inst[a]->w > d->inst[b]->w
                                              : a < b;
    });
    try {
        for (int i : vol) {
            instance *in = d->inst[i];
            if (d->levels.empty() || d->levels.back().w != in->w ||
                d->levels.back().h != in->h) {
                level lv = grid_of(in);
                if ((Uint64)lv.cols * (Uint64)lv.rows > (Uint64)MAX_FRAMES) {
                    delete d;
                    return sp_error_set(err, SP_ERR_INPUT, path,
                                        "a level of %lldx%lld tiles",
                                        (long long)lv.cols, (long long)lv.rows);
                }
                lv.tiles.resize((size_t)(lv.cols * lv.rows));
                d->levels.push_back(std::move(lv));
            }
            level &lv = d->levels.back();
            if (lv.tw != in->tw || lv.th != in->th) {
                delete d;
                return sp_error_set(err, SP_ERR_INPUT, path,
                                    "%s: tiles of %lldx%lld in a level of "
                                    "%lldx%lld tiles",
                                    sp_basename(in->path.c_str()),
                                    (long long)in->tw, (long long)in->th,
                                    (long long)lv.tw, (long long)lv.th);
            }
            if (!place(d, i, in, &lv, &why)) {
                delete d;
                return sp_error_set(err, SP_ERR_INPUT, path, "%s: %s",
                                    sp_basename(in->path.c_str()), why.c_str());
            }
        }
    } catch (const std::bad_alloc &) {
        delete d;
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }

    /* what the slide says of itself */
    instance *base = d->inst[vol[0]];
    DcmDataset *ds = base->ds;
    add_prop(d, "dicom.SeriesInstanceUID", d->series);
    add_prop(d, "dicom.StudyInstanceUID", str_of(ds, DCM_StudyInstanceUID));
    add_prop(d, "dicom.Manufacturer", str_of(ds, DCM_Manufacturer));
    add_prop(d, "dicom.ManufacturerModelName",
             str_of(ds, DCM_ManufacturerModelName));
    add_prop(d, "dicom.ContainerIdentifier",
             str_of(ds, DCM_ContainerIdentifier));
    add_prop(d, "dicom.TransferSyntaxUID",
             DcmXfer(ds->getOriginalXfer()).getXferID());
    add_prop(d, "dicom.PhotometricInterpretation",
             str_of(ds, DCM_PhotometricInterpretation));
    add_prop(d, "dicom.instances", std::to_string(d->inst.size()));
    /* mpp: PixelSpacing (mm, row then column) of the shared functional
     * groups, else the imaged volume over the pixel matrix */
    DcmItem *sf = first_item(ds, DCM_SharedFunctionalGroupsSequence);
    DcmItem *pm = first_item(sf, DCM_PixelMeasuresSequence);
    double row_mm = 0, col_mm = 0;
    Float32 vw = 0, vh = 0;
    if (pm && pm->findAndGetFloat64(DCM_PixelSpacing, row_mm, 0).good() &&
        pm->findAndGetFloat64(DCM_PixelSpacing, col_mm, 1).good() &&
        row_mm > 0 && col_mm > 0) {
        s->mpp_x = col_mm * 1000;
        s->mpp_y = row_mm * 1000;
        s->has_mpp = true;
    } else if (ds->findAndGetFloat32(DCM_ImagedVolumeWidth, vw).good() &&
               ds->findAndGetFloat32(DCM_ImagedVolumeHeight, vh).good() &&
               vw > 0 && vh > 0) {
        s->mpp_x = vw * 1000.0 / (double)base->w;
        s->mpp_y = vh * 1000.0 / (double)base->h;
        s->has_mpp = true;
    }
    if (s->has_mpp) {
        char b[64];
        std::snprintf(b, sizeof b, "%.10g", s->mpp_x);
        add_prop(d, "openslide.mpp-x", b);
        std::snprintf(b, sizeof b, "%.10g", s->mpp_y);
        add_prop(d, "openslide.mpp-y", b);
    }
    DcmItem *op = first_item(ds, DCM_OpticalPathSequence);
    Float64 power = 0;
    std::string pw = str_of(op, DCM_ObjectiveLensPower);
    if (!pw.empty() && (power = std::atof(pw.c_str())) > 0) {
        s->objective = power;
        s->has_objective = true;
        add_prop(d, "openslide.objective-power", pw);
    }
    /* the content key: FNV-1a over the series, the levels' sizes and the
     * smallest level's first frame bytes are not read here (a lazy open
     * stays lazy): the series UID and sizes identify a DICOM series */
    std::string key = d->series;
    for (const level &lv : d->levels)
        key += "/" + std::to_string(lv.w) + "x" + std::to_string(lv.h);
    char qh[40];
    std::snprintf(
        qh, sizeof qh, "dicom-%016llx",
        (unsigned long long)sp_fnv1a(SP_FNV_SEED, key.data(), key.size()));
    d->quickhash = qh;
    add_prop(d, "openslide.quickhash-1", d->quickhash);
    add_prop(d, "openslide.vendor", "dicom");

    /* into the slide's plain-data views */
    s->level_count = (int)d->levels.size();
    s->levels = (sp_level *)calloc(d->levels.size(), sizeof *s->levels);
    s->props =
        (sp_property *)calloc(d->prop_names.size() + 1, sizeof *s->props);
    s->assoc =
        (sp_associated *)calloc(d->assoc_inst.size() + 1, sizeof *s->assoc);
    if (!s->levels || !s->props || !s->assoc) {
        delete d;
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    for (size_t i = 0; i < d->levels.size(); i++) {
        const level &lv = d->levels[i];
        sp_level *l = &s->levels[i];
        l->width = lv.w;
        l->height = lv.h;
        /* as OpenSlide: the mean of the two ratios */
        l->downsample = ((double)d->levels[0].w / (double)lv.w +
                         (double)d->levels[0].h / (double)lv.h) /
                        2.0;
        l->tile_width = lv.tw;
        l->tile_height = lv.th;
    }
    s->prop_count = (int)d->prop_names.size();
    for (size_t i = 0; i < d->prop_names.size(); i++) {
        s->props[i].name = d->prop_names[i].c_str();
        s->props[i].value = d->prop_values[i].c_str();
    }
    s->assoc_count = (int)d->assoc_inst.size();
    for (size_t i = 0; i < d->assoc_inst.size(); i++) {
        const instance *in = d->inst[d->assoc_inst[i]];
        s->assoc[i].name = in->type == "LABEL"      ? "label"
                           : in->type == "OVERVIEW" ? "macro"
                                                    : "thumbnail";
        s->assoc[i].width = in->w;
        s->assoc[i].height = in->h;
    }
    s->quickhash = d->quickhash.c_str();
    s->vendor = "dicom";
    d->half_ok = half_readable(d);
    s->dicom = d;
    return true;
}

extern "C" void sp__dicom_free(sp__dicom *d) { delete d; }

extern "C" sp__dicom_reader *sp__dicom_reader_create(const sp__dicom *d) {
    auto *r = new (std::nothrow) sp__dicom_reader;
    if (!r)
        return nullptr;
    r->d = d;
    r->cinfo.err = jpeg_std_error(&r->jerr.pub);
    r->jerr.pub.error_exit = jerr_exit;
    r->jerr.pub.emit_message = jerr_emit;
    r->jerr.pub.output_message = jerr_output;
    if (setjmp(r->jerr.jb)) {
        delete r;
        return nullptr;
    }
    jpeg_create_decompress(&r->cinfo);
    r->cinfo_ok = true;
    r->memo = sp__memo_create(); /* none: every frame is decoded */
    return r;
}

extern "C" int64_t sp__dicom_reader_repeats(const sp__dicom_reader *r) {
    return r ? sp__memo_hits(r->memo) : 0;
}

extern "C" void sp__dicom_reader_free(sp__dicom_reader *r) {
    if (!r)
        return;
    if (r->cinfo_ok)
        jpeg_destroy_decompress(&r->cinfo);
    sp__memo_free(r->memo);
    delete r;
}

namespace {

/* Frame `f` of `in`'s bytes into `data`; `cache` is DCMTK's for the
 * reads it does (under the instance's lock). */
bool fetch_frame(instance *in, Uint32 f, std::vector<Uint8> &data,
                 DcmFileCache *cache, std::string *why) {
    if (!in->item_off.empty()) {
        /* offsets found at open: pread, no lock */
        data.clear();
        for (Uint32 k = 0; k < in->frag_count[f]; k++) {
            Uint32 i = in->frag_first[f] + k;
            Uint32 len = in->item_len[i];
            if (len > (Uint32)64 << 20) {
                *why = "frame " + std::to_string(f + 1) + ": a fragment of " +
                       std::to_string(len) + " bytes";
                return false;
            }
            size_t at = data.size();
            data.resize(at + len);
            int e =
                sp__pread_all(in->fd, data.data() + at, len, in->item_off[i]);
            if (e != 0) {
                *why = "frame " + std::to_string(f + 1) + ": " +
                       (e > 0 ? std::strerror(e)
                              : "the file is shorter than it was");
                return false;
            }
        }
        return true;
    }
    std::lock_guard<std::mutex> lock(in->mu);
    if (in->kind == px::native) {
        Uint64 n = (Uint64)in->tw * (Uint64)in->th * 3;
        data.resize((size_t)n);
        OFCondition c = in->native->getPartialValue(
            data.data(), (Uint32)(n * f), (Uint32)n, cache);
        if (c.bad()) {
            *why =
                std::string("frame ") + std::to_string(f + 1) + ": " + c.text();
            return false;
        }
        return true;
    }
    data.clear();
    for (Uint32 k = 0; k < in->frag_count[f]; k++) {
        const Uint32 i = in->frag_first[f] + k;
        DcmPixelItem *it = i < in->items.size() ? in->items[i] : nullptr;
        if (!it && (in->seq->getItem(it, i).bad() || !it)) {
            *why = "frame " + std::to_string(f + 1) + ": a fragment is missing";
            return false;
        }
        Uint32 len = it->getLength();
        if (len > (Uint32)64 << 20) {
            *why = "frame " + std::to_string(f + 1) + ": a fragment of " +
                   std::to_string(len) + " bytes";
            return false;
        }
        size_t at = data.size();
        data.resize(at + len);
        OFCondition c =
            len ? it->getPartialValue(data.data() + at, 0, len, cache)
                : EC_Normal;
        if (c.bad()) {
            *why = "frame " + std::to_string(f + 1) + ": " + c.text();
            return false;
        }
    }
    return true;
}

/* Frame `f` of `in`'s bytes into r->data. */
bool fetch(sp__dicom_reader *r, instance *in, Uint32 f, std::string *why) {
    return fetch_frame(in, f, r->data, &r->cache, why);
}

/* Decode r->data (one JPEG frame), tw x th RGB, into `dst` (rows
 * `stride` bytes apart): r->tile, or straight into a caller's region.
 * Only rows [r0, r1) and at least columns [c0, c1) of it need be right:
 * a smaller box is cropped (jpeg_crop_scanline, widened by an iMCU each
 * side so that fancy upsampling sees the samples it needs, as direct.c
 * does) and the rows above it skipped; the rows below are skipped too
 * down to the last, which is decoded into its own row of `dst` (so `dst`
 * holds the whole frame then): every row is entropy-decoded, and damage
 * anywhere in the frame still fails it. A whole frame whose bytes
 * repeat a frame's that decoded before is copied from the reader's memo
 * (memo.c); the frame's bytes are its whole JPEG, so what else changes
 * the decode is the photometric interpretation and the scale. */
bool decode(sp__dicom_reader *r, const instance *in, Uint32 f, uint8_t *dst,
            size_t stride, int64_t c0, int64_t c1, int64_t r0, int64_t r1,
            std::string *why, int denom = 1) {
    jpeg_decompress_struct *c = &r->cinfo;
    std::vector<JSAMPROW> rows;
    if (setjmp(r->jerr.jb)) {
        jpeg_abort_decompress(c);
        *why = "frame " + std::to_string(f + 1) + ": " + r->jerr.msg;
        return false;
    }
    if (r->data.empty()) {
        *why = "frame " + std::to_string(f + 1) + " is empty";
        return false;
    }
    const bool whole =
        c0 == 0 && c1 >= in->tw / denom && r0 == 0 && r1 >= in->th / denom;
    const uint32_t kind = (in->ycc ? 4u : 0u) | (uint32_t)denom;
    if (whole && sp__memo_get(r->memo, kind, r->data.data(), r->data.size(),
                              in->tw / denom, in->th / denom, dst, stride))
        return true;
    jpeg_mem_src(c, r->data.data(), (unsigned long)r->data.size());
    if (jpeg_read_header(c, TRUE) != JPEG_HEADER_OK) {
        jpeg_abort_decompress(c);
        *why = "frame " + std::to_string(f + 1) + ": no JPEG image";
        return false;
    }
    if (c->num_components != 3) {
        jpeg_abort_decompress(c);
        *why = "frame " + std::to_string(f + 1) + ": " +
               std::to_string(c->num_components) + " JPEG components";
        return false;
    }
    /* DICOM's photometric interpretation says how the bitstream is coded */
    c->jpeg_color_space = in->ycc ? JCS_YCbCr : JCS_RGB;
    c->out_color_space = JCS_RGB;
    c->scale_num = 1;
    c->scale_denom = (unsigned)denom;
    jpeg_start_decompress(c);
    /* the frame's size in output pixels (even at denom 2) */
    const int64_t tw = in->tw / denom, th = in->th / denom;
    if ((int64_t)c->output_width != tw || (int64_t)c->output_height != th) {
        jpeg_abort_decompress(c);
        *why = "frame " + std::to_string(f + 1) + " is " +
               std::to_string(c->output_width * denom) + "x" +
               std::to_string(c->output_height * denom) + ", not " +
               std::to_string(in->tw) + "x" + std::to_string(in->th);
        return false;
    }
    size_t xoff = 0;
    const int64_t m = (int64_t)c->max_h_samp_factor * DCTSIZE;
    const int64_t a = std::max<int64_t>(c0 - m, 0),
                  b = std::min<int64_t>(c1 + m, tw);
    if (a > 0 || b < tw) {
        JDIMENSION xo = (JDIMENSION)a, w = (JDIMENSION)(b - a);
        jpeg_crop_scanline(c, &xo, &w);
        xoff = (size_t)xo * 3;
    }
    rows.resize((size_t)th);
    for (int64_t y = 0; y < th; y++)
        rows[(size_t)y] = dst + (size_t)y * stride + xoff;
    if (r0 > 0)
        jpeg_skip_scanlines(c, (JDIMENSION)r0);
    while ((int64_t)c->output_scanline < r1)
        jpeg_read_scanlines(c, rows.data() + c->output_scanline,
                            (JDIMENSION)(r1 - c->output_scanline));
    if (r1 < th - 1)
        jpeg_skip_scanlines(c, (JDIMENSION)(th - 1 - r1));
    while (c->output_scanline < c->output_height)
        jpeg_read_scanlines(c, rows.data() + c->output_scanline, 1);
    jpeg_finish_decompress(c);
    if (whole)
        sp__memo_put(r->memo, kind, r->data.data(), r->data.size(), tw, th, dst,
                     stride);
    return true;
}

/* OpenJPEG reads the frame from memory. */
struct j2k_src {
    const Uint8 *p;
    size_t n, off;
};

OPJ_SIZE_T j2k_read(void *buf, OPJ_SIZE_T n, void *u) {
    auto *s = static_cast<j2k_src *>(u);
    if (s->off >= s->n)
        return (OPJ_SIZE_T)-1;
    size_t k = std::min((size_t)n, s->n - s->off);
    std::memcpy(buf, s->p + s->off, k);
    s->off += k;
    return k;
}

OPJ_OFF_T j2k_skip(OPJ_OFF_T n, void *u) {
    auto *s = static_cast<j2k_src *>(u);
    if (n < 0 || (size_t)n > s->n - s->off)
        return -1;
    s->off += (size_t)n;
    return n;
}

OPJ_BOOL j2k_seek(OPJ_OFF_T n, void *u) {
    auto *s = static_cast<j2k_src *>(u);
    if (n < 0 || (size_t)n > s->n)
        return OPJ_FALSE;
    s->off = (size_t)n;
    return OPJ_TRUE;
}

void j2k_error(const char *msg, void *u) {
    auto *e = static_cast<std::string *>(u);
    if (e->empty()) {
        *e = msg;
        while (!e->empty() && (e->back() == '\n' || e->back() == ' '))
            e->pop_back();
    }
}

void j2k_quiet(const char *, void *) {}

/* Decode r->data (one JPEG 2000 frame) into r->tile, tw x th RGB. */
bool decode_j2k(sp__dicom_reader *r, const instance *in, Uint32 f,
                std::string *why) {
    const std::string frame = "frame " + std::to_string(f + 1) + ": ";
    static const Uint8 jp2_sig[] = {0, 0, 0, 12, 'j', 'P', ' ', ' '};
    bool jp2 = r->data.size() >= 8 && !std::memcmp(r->data.data(), jp2_sig, 8);
    opj_codec_t *codec =
        opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    opj_stream_t *st = opj_stream_default_create(OPJ_TRUE);
    opj_image_t *img = nullptr;
    std::string err;
    j2k_src src{r->data.data(), r->data.size(), 0};
    opj_dparameters_t prm;
    bool ok = false;
    if (!codec || !st) {
        *why = frame + "out of memory";
        goto out;
    }
    opj_set_default_decoder_parameters(&prm);
    opj_set_error_handler(codec, j2k_error, &err);
    opj_set_warning_handler(codec, j2k_quiet, nullptr);
    opj_set_info_handler(codec, j2k_quiet, nullptr);
    opj_stream_set_read_function(st, j2k_read);
    opj_stream_set_skip_function(st, j2k_skip);
    opj_stream_set_seek_function(st, j2k_seek);
    opj_stream_set_user_data(st, &src, nullptr);
    opj_stream_set_user_data_length(st, r->data.size());
    if (!opj_setup_decoder(codec, &prm) || !opj_read_header(st, codec, &img) ||
        !img) {
        *why = frame + (err.empty() ? "no JPEG 2000 image" : err);
        goto out;
    }
    if (img->numcomps < 3 || (int64_t)(img->x1 - img->x0) != in->tw ||
        (int64_t)(img->y1 - img->y0) != in->th) {
        *why = frame + "a JPEG 2000 image of " +
               std::to_string(img->x1 - img->x0) + "x" +
               std::to_string(img->y1 - img->y0) + " and " +
               std::to_string(img->numcomps) + " components, not " +
               std::to_string(in->tw) + "x" + std::to_string(in->th) + " RGB";
        goto out;
    }
    if (!opj_decode(codec, st, img) || !opj_end_decompress(codec, st)) {
        *why = frame + (err.empty() ? "JPEG 2000 decoding failed" : err);
        goto out;
    }
    for (int c = 0; c < 3; c++) {
        const opj_image_comp_t &cp = img->comps[c];
        if (cp.dx != 1 || cp.dy != 1 || (int64_t)cp.w != in->tw ||
            (int64_t)cp.h != in->th || cp.prec != 8 || cp.sgnd || !cp.data) {
            *why = frame + "a JPEG 2000 component that is not 8-bit, "
                           "unsigned and full size";
            goto out;
        }
    }
    {
        const size_t n = (size_t)(in->tw * in->th);
        uint8_t *o = r->tile.data();
        for (size_t i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) {
                OPJ_INT32 v = img->comps[c].data[i];
                o[3 * i + (size_t)c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
    ok = true;
out:
    if (img)
        opj_image_destroy(img);
    if (st)
        opj_stream_destroy(st);
    if (codec)
        opj_destroy_codec(codec);
    return ok;
}

/* The tile (tx, ty) of `lv` decoded into r->tile; false with `why` on a
 * damaged frame. *have false: no frame there (background). With `dst`
 * (rows `stride` bytes apart), a JPEG frame whose whole lies in the
 * caller's region is decoded straight there instead (*direct set; the
 * reader's one-frame cache is then left as it was). */
bool tile_of(sp__dicom_reader *r, const level &lv, int64_t tx, int64_t ty,
             uint8_t *dst, size_t stride, int64_t c0, int64_t c1, int64_t r0,
             int64_t r1, bool *have, bool *direct, std::string *why) {
    const tile_ref &t = lv.tiles[(size_t)(ty * lv.cols + tx)];
    *have = t.inst >= 0;
    *direct = false;
    if (!*have)
        return true;
    if (t.inst == r->cached_inst && t.frame == r->cached_frame)
        return true;
    instance *in = r->d->inst[(size_t)t.inst];
    if (dst && in->kind == px::jpeg && in->tw == lv.tw && in->th == lv.th) {
        *direct = true;
        return fetch(r, in, t.frame, why) &&
               decode(r, in, t.frame, dst, stride, 0, in->tw, 0, in->th, why);
    }
    r->cached_inst = -1;
    r->tile.resize((size_t)(in->tw * in->th * 3));
    if (!fetch(r, in, t.frame, why))
        return false;
    if (in->kind == px::native)
        std::memcpy(r->tile.data(), r->data.data(), r->tile.size());
    else if (in->kind == px::j2k
                 ? !decode_j2k(r, in, t.frame, why)
                 : !decode(r, in, t.frame, r->tile.data(), (size_t)in->tw * 3,
                           c0, c1, r0, r1, why))
        return false;
    /* a cropped decode holds only its box: not kept for the next read */
    bool whole_frame = in->kind != px::jpeg ||
                       (c0 == 0 && c1 >= in->tw && r0 == 0 && r1 >= in->th);
    r->cached_inst = whole_frame ? t.inst : -1;
    r->cached_frame = t.frame;
    return true;
}

/* Whether the region (x, y, w, h) leaves the image (0, 0, iw, ih), so
 * that part of it is background with no frame to give it. */
bool leaves(int64_t x, int64_t y, int64_t w, int64_t h, int64_t iw,
            int64_t ih) {
    return x < 0 || y < 0 || x + w > iw || y + h > ih;
}

/* Frames are decoded straight into the region and the region is filled
 * with the background only where no frame is: where it leaves the
 * image, and in the box of each absent frame (TILED_SPARSE) */
bool read_grid(sp__dicom_reader *r, const level &lv, int64_t x, int64_t y,
               int64_t w, int64_t h, const uint8_t bg[3], uint8_t *rgb,
               size_t stride, const char *path, sp_error *err) {
    if (leaves(x, y, w, h, lv.w, lv.h))
        sp__fill_bg(rgb, stride, w, h, bg);
    int64_t x0 = std::max<int64_t>(x, 0), y0 = std::max<int64_t>(y, 0);
    int64_t x1 = std::min(x + w, lv.w), y1 = std::min(y + h, lv.h);
    std::string why;
    try {
        for (int64_t ty = y0 / lv.th; y0 < y1 && ty <= (y1 - 1) / lv.th; ty++)
            for (int64_t tx = x0 / lv.tw; x0 < x1 && tx <= (x1 - 1) / lv.tw;
                 tx++) {
                bool have = false, direct = false;
                int64_t ax = std::max(x0, tx * lv.tw),
                        bx = std::min(x1, (tx + 1) * lv.tw);
                int64_t ay = std::max(y0, ty * lv.th),
                        by = std::min(y1, (ty + 1) * lv.th);
                /* a whole frame inside the region: decoded in place */
                bool whole = ax == tx * lv.tw && bx == (tx + 1) * lv.tw &&
                             ay == ty * lv.th && by == (ty + 1) * lv.th;
                uint8_t *at =
                    rgb + (size_t)(ay - y) * stride + (size_t)(ax - x) * 3;
                /* the box inside the frame; a frame reaching past the
                 * level (its padding) is decoded whole there */
                int64_t fc1 = bx - tx * lv.tw, fr1 = by - ty * lv.th;
                if (bx == lv.w)
                    fc1 = lv.tw;
                if (by == lv.h)
                    fr1 = lv.th;
                if (!tile_of(r, lv, tx, ty, whole ? at : nullptr, stride,
                             ax - tx * lv.tw, fc1, ay - ty * lv.th, fr1, &have,
                             &direct, &why))
                    return sp_error_set(err, SP_ERR_INPUT, path,
                                        "cannot read pixels: %s", why.c_str());
                if (!have)
                    sp__fill_bg(at, stride, bx - ax, by - ay, bg);
                if (!have || direct)
                    continue;
                for (int64_t yy = ay; yy < by; yy++)
                    std::memcpy(
                        rgb + (size_t)(yy - y) * stride + (size_t)(ax - x) * 3,
                        r->tile.data() + (size_t)(((yy - ty * lv.th) * lv.tw +
                                                   (ax - tx * lv.tw)) *
                                                  3),
                        (size_t)(bx - ax) * 3);
            }
    } catch (const std::bad_alloc &) {
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    return true;
}

/* Level `lv` at half size (its JPEG frames decoded by DCT scaling; those
 * the level's edge cuts after an odd row or column decoded whole and
 * boxed, as direct.c does): region (x, y, w, h) of that image. */
bool read_half(sp__dicom_reader *r, const level &lv, int64_t x, int64_t y,
               int64_t w, int64_t h, const uint8_t bg[3], uint8_t *rgb,
               size_t stride, const char *path, sp_error *err) {
    const int64_t W = (lv.w + 1) / 2, H = (lv.h + 1) / 2, tw = lv.tw / 2,
                  th = lv.th / 2;
    if (leaves(x, y, w, h, W, H))
        sp__fill_bg(rgb, stride, w, h, bg);
    int64_t x0 = std::max<int64_t>(x, 0), y0 = std::max<int64_t>(y, 0);
    int64_t x1 = std::min(x + w, W), y1 = std::min(y + h, H);
    std::string why;
    r->cached_inst = -1; /* r->tile is scratch here */
    try {
        for (int64_t ty = y0 / th; y0 < y1 && ty <= (y1 - 1) / th; ty++)
            for (int64_t tx = x0 / tw; x0 < x1 && tx <= (x1 - 1) / tw; tx++) {
                const tile_ref &t = lv.tiles[(size_t)(ty * lv.cols + tx)];
                int64_t ax = std::max(x0, tx * tw),
                        bx = std::min(x1, (tx + 1) * tw);
                int64_t ay = std::max(y0, ty * th),
                        by = std::min(y1, (ty + 1) * th);
                uint8_t *at =
                    rgb + (size_t)(ay - y) * stride + (size_t)(ax - x) * 3;
                if (t.inst < 0) { /* no frame: background */
                    sp__fill_bg(at, stride, bx - ax, by - ay, bg);
                    continue;
                }
                instance *in = r->d->inst[(size_t)t.inst];
                int64_t c0 = ax - tx * tw, c1 = bx - tx * tw;
                int64_t r0 = ay - ty * th, r1 = by - ty * th;
                if (!fetch(r, in, t.frame, &why))
                    return sp_error_set(err, SP_ERR_INPUT, path,
                                        "cannot read pixels: %s", why.c_str());
                bool ok;
                if (sp__odd_edge(lv.w, tx, lv.tw) ||
                    sp__odd_edge(lv.h, ty, lv.th)) {
                    r->tile.resize((size_t)(lv.tw * lv.th * 3));
                    ok = decode(r, in, t.frame, r->tile.data(),
                                (size_t)lv.tw * 3, 0, lv.tw, 0, lv.th, &why);
                    if (ok)
                        sp__box_half(r->tile.data(), lv.tw,
                                     std::min(lv.w - tx * lv.tw, lv.tw) - 1,
                                     std::min(lv.h - ty * lv.th, lv.th) - 1, c0,
                                     c1, r0, r1, at, stride);
                } else if (c0 == 0 && c1 == tw && r0 == 0 && r1 == th) {
                    ok = decode(r, in, t.frame, at, stride, 0, tw, 0, th, &why,
                                2);
                } else {
                    r->tile.resize((size_t)(tw * th * 3));
                    ok = decode(r, in, t.frame, r->tile.data(), (size_t)tw * 3,
                                c0, bx == W ? tw : c1, r0, by == H ? th : r1,
                                &why, 2);
                    for (int64_t yy = r0; ok && yy < r1; yy++)
                        std::memcpy(at + (size_t)(yy - r0) * stride,
                                    r->tile.data() +
                                        (size_t)((yy * tw + c0) * 3),
                                    (size_t)(c1 - c0) * 3);
                }
                if (!ok)
                    return sp_error_set(err, SP_ERR_INPUT, path,
                                        "cannot read pixels: %s", why.c_str());
            }
    } catch (const std::bad_alloc &) {
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    return true;
}

} // namespace

extern "C" bool sp__dicom_can_half(const sp__dicom *d) { return d->half_ok; }

extern "C" bool sp__dicom_read_half(sp__dicom_reader *r, int64_t x, int64_t y,
                                    int64_t w, int64_t h, const uint8_t bg[3],
                                    uint8_t *rgb, size_t stride,
                                    const char *path, sp_error *err) {
    if (!sp__dicom_can_half(r->d))
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level 0 cannot be read at half size");
    return read_half(r, r->d->levels[0], x, y, w, h, bg, rgb, stride, path,
                     err);
}

extern "C" bool sp__dicom_read(sp__dicom_reader *r, int lvl, int64_t x,
                               int64_t y, int64_t w, int64_t h,
                               const uint8_t bg[3], uint8_t *rgb, size_t stride,
                               const char *path, sp_error *err) {
    return read_grid(r, r->d->levels[(size_t)lvl], x, y, w, h, bg, rgb, stride,
                     path, err);
}

extern "C" bool sp__dicom_read_associated(sp__dicom *d, int index,
                                          const uint8_t bg[3], uint8_t *rgb,
                                          const char *path, sp_error *err) {
    instance *in = d->inst[(size_t)d->assoc_inst[(size_t)index]];
    level lv = grid_of(in);
    std::string why;
    try {
        lv.tiles.resize((size_t)(lv.cols * lv.rows));
        if (!place(d, d->assoc_inst[(size_t)index], in, &lv, &why))
            return sp_error_set(err, SP_ERR_INPUT, path, "%s: %s",
                                sp_basename(in->path.c_str()), why.c_str());
    } catch (const std::bad_alloc &) {
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    sp__dicom_reader *r = sp__dicom_reader_create(d);
    if (!r)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    bool ok = read_grid(r, lv, 0, 0, lv.w, lv.h, bg, rgb, (size_t)lv.w * 3,
                        path, err);
    sp__dicom_reader_free(r);
    return ok;
}

extern "C" const char *sp__dicom_version(void) { return OFFIS_DCMTK_VERSION; }

/* ---- stored frames (passthrough) --------------------------------------- */

namespace {

/* Frame `f` of `in`'s bytes into `data` from any thread (a DCMTK cache
 * of its own): false with *why, *oom when memory ran out. */
bool frame_bytes(instance *in, Uint32 f, std::vector<Uint8> &data,
                 std::string *why, bool *oom) {
    DcmFileCache cache;
    *oom = false;
    try {
        return fetch_frame(in, f, data, &cache, why);
    } catch (const std::bad_alloc &) {
        *oom = true;
        *why = "out of memory";
        return false;
    }
}

} // namespace

extern "C" bool sp__dicom_stored(const sp__dicom *d, int lvl,
                                 sp_stored_tiles *out, const char **why) {
    const level &lv = d->levels[(size_t)lvl];
    for (const tile_ref &t : lv.tiles) {
        if (t.inst < 0) {
            *why = "some of its tiles have no frame";
            return false;
        }
        const instance *in = d->inst[(size_t)t.inst];
        if (in->kind != px::jpeg) {
            *why = "its frames are not baseline JPEG";
            return false;
        }
        if (in->tw != lv.tw || in->th != lv.th) {
            *why = "its instances' frame sizes differ";
            return false;
        }
    }
    if (lv.tiles.empty()) {
        *why = "it has no frames";
        return false;
    }
    const tile_ref &t0 = lv.tiles[0];
    instance *in = d->inst[(size_t)t0.inst];
    std::vector<Uint8> data;
    std::string msg;
    bool oom;
    *why = "its first frame cannot be read";
    if (!frame_bytes(in, t0.frame, data, &msg, &oom))
        return false;
    return sp__jpeg_stored_info(data.data(), data.size(), lv.tw, lv.th,
                                !in->ycc, out, why);
}

extern "C" bool sp__dicom_stored_tile(const sp__dicom *d, int lvl, int64_t col,
                                      int64_t row, sp_buf *out,
                                      const char *path, sp_error *err) {
    const level &lv = d->levels[(size_t)lvl];
    if (col < 0 || row < 0 || col >= lv.cols || row >= lv.rows)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level %d has no tile (%lld, %lld)", lvl,
                            (long long)col, (long long)row);
    const tile_ref &t = lv.tiles[(size_t)(row * lv.cols + col)];
    if (t.inst < 0 || d->inst[(size_t)t.inst]->kind != px::jpeg)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level %d's tiles cannot be copied", lvl);
    instance *in = d->inst[(size_t)t.inst];
    std::vector<Uint8> data;
    std::string why;
    bool oom;
    if (!frame_bytes(in, t.frame, data, &why, &oom))
        return sp_error_set(err, oom ? SP_ERR_NOMEM : SP_ERR_INPUT, path,
                            "level %d: %s", lvl, why.c_str());
    /* a fragment has an even length: a JPEG of odd length ends with a pad
     * byte after its EOI, dropped here */
    size_t n = data.size();
    if (n >= 3 && data[n - 1] == 0 && data[n - 2] == 0xD9 &&
        data[n - 3] == 0xFF)
        n--;
    if (n < 4 || data[0] != 0xFF || data[1] != 0xD8)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "level %d frame %u is not a JPEG stream", lvl,
                            (unsigned)t.frame + 1);
    sp_buf_reset(out);
    sp_buf_append(out, data.data(), n);
    if (out->oom)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    return true;
}
