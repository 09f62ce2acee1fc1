/* DICOM whole-slide pyramid writer (VL Whole Slide Microscopy Image
 * Storage, Supplement 145), through DCMTK, behind the writer ops of
 * tiler_private.h: OUT.dicom/level-<d>.dcm, one instance per level,
 * DimensionOrganizationType TILED_FULL (frames row-major), JPEG baseline
 * frames from our encoder (YCbCr 4:2:0 at every quality: YBR_FULL_422),
 * encapsulated with a Basic Offset Table, or
 * past 4 GiB of frames an empty one and an Extended Offset Table, so any
 * frame is found without a scan.
 *
 * DCMTK's data dictionary (a text file, parsed on first use: ~120 million
 * instructions) is loaded on a thread of its own from the moment the
 * writer opens, alongside the tiles, instead of at the finish; there,
 * level 0 (most of the bytes) is written on a thread of its own while the
 * other levels are written on the caller's.
 *
 * Tiles arrive from many threads, all levels at once: as for TIFF they
 * are appended to a spool file (an atomic offset, pwrite) and indexed.
 * finish() builds each level's dataset with DCMTK and gives every frame's
 * pixel item its value *from the spool file* (createValueFromTempFile, a
 * stream factory that preads the writer's descriptor):
 * DCMTK streams them into the instance, so memory holds the index and the
 * datasets, never the frames. Odd-length frames are padded with one zero
 * byte in the spool (items have even lengths; JPEG ends at its EOI).
 *
 * Patient and study attributes are present and empty (de-identified)
 * unless given (sp_pyramid_opts.dicom_attributes: a JSON object of DICOM
 * keywords to strings). UIDs are 2.25.<128-bit random> (ISO/IEC 9834-8):
 * one study, series and frame of reference for all levels. */
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcwcache.h>
#include <dcmtk/dcmdata/dcvrov.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <string>
#include <sys/random.h>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include <json-c/json.h>
#include <lcms2.h>

extern "C" {
#include "tiler_private.h"
}

namespace {

struct frame_index {
    std::vector<uint64_t> off;
    std::vector<uint32_t> len; /* padded to even */
};

std::string new_uid() {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* no entropy source: time and pid, still unique enough here */
        uint64_t a = (uint64_t)time(nullptr), b = (uint64_t)getpid();
        std::memcpy(r, &a, 8);
        std::memcpy(r + 8, &b, 8);
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* a version 4 UUID */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    unsigned __int128 v = 0;
    for (unsigned char c : r)
        v = (v << 8) | c;
    char digits[48];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    std::string s = "2.25.";
    while (n)
        s += digits[--n];
    return s;
}

std::string fmt(const char *f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

/* A frame's bytes for DCMTK, from the spool. DcmInputFileStreamFactory
 * would open, stat and seek the spool once per frame: 19,000 times for a
 * 33k x 25k slide, a quarter of the single-threaded finish. */
class spool_producer : public DcmProducer {
  public:
    spool_producer(int fd, uint64_t off, uint64_t len)
        : fd_(fd), off_(off), len_(len) {}
    OFBool good() const override { return status_.good(); }
    OFCondition status() const override { return status_; }
    OFBool eos() override { return pos_ >= len_; }
    offile_off_t avail() override {
        return status_.good() ? (offile_off_t)(len_ - pos_) : 0;
    }
    offile_off_t read(void *buf, offile_off_t n) override {
        uint64_t want = (uint64_t)n < len_ - pos_ ? (uint64_t)n : len_ - pos_;
        uint64_t at = off_ + pos_, got = 0;
        while (status_.good() && got < want) {
            ssize_t k =
                pread(fd_, (char *)buf + got, want - got, (off_t)(at + got));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                status_ = EC_InvalidStream;
            else
                got += (uint64_t)k;
        }
        pos_ += got;
        return (offile_off_t)got;
    }
    offile_off_t skip(offile_off_t n) override {
        uint64_t k = (uint64_t)n < len_ - pos_ ? (uint64_t)n : len_ - pos_;
        pos_ += k;
        return (offile_off_t)k;
    }
    void putback(offile_off_t n) override {
        if ((uint64_t)n > pos_)
            status_ = EC_PutbackFailed;
        else
            pos_ -= (uint64_t)n;
    }

  private:
    int fd_;
    uint64_t off_, len_, pos_ = 0;
    OFCondition status_ = EC_Normal;
};

class spool_stream : public DcmInputStream {
  public:
    spool_stream(int fd, uint64_t off, uint64_t len)
        : DcmInputStream(&prod_), prod_(fd, off, len), fd_(fd), off_(off),
          len_(len) {}
    DcmInputStreamFactory *newFactory() const override;

  private:
    spool_producer prod_;
    int fd_;
    uint64_t off_, len_;
};

class spool_factory : public DcmInputStreamFactory {
  public:
    spool_factory(int fd, uint64_t off, uint64_t len)
        : fd_(fd), off_(off), len_(len) {}
    DcmInputStream *create() const override {
        return new spool_stream(fd_, off_, len_);
    }
    DcmInputStreamFactory *clone() const override {
        return new spool_factory(fd_, off_, len_);
    }
    DcmInputStreamFactoryType ident() const override {
        return DFT_DcmInputFileStreamFactory;
    }

  private:
    int fd_;
    uint64_t off_, len_;
};

DcmInputStreamFactory *spool_stream::newFactory() const {
    uint64_t at = (uint64_t)tell();
    return new spool_factory(fd_, off_ + at, len_ - at);
}

/* An instance file for DCMTK to write, in writes of 256 KiB: its own file
 * stream goes through stdio in 8 KiB writes (17,000 system calls for a
 * 33k x 25k slide). Not larger: the kernel gives a write page-cache
 * folios as large as the write, and under a hypervisor that takes free
 * memory back (virtio-balloon free page reporting: free blocks of 2 MiB
 * and more), 2 MiB folios are memory the host must map again, page by
 * page, as the copy touches it. Writing the benchmark slide's 108 MB in
 * 4 MiB writes cost 0.8-1.2 s of system time there, in 256 KiB writes
 * 0.2-0.3 s. */
class file_consumer : public DcmConsumer {
  public:
    explicit file_consumer(int fd) : fd_(fd) { buf_.reserve(CAP); }
    OFBool good() const override { return status_.good(); }
    OFCondition status() const override { return status_; }
    OFBool isFlushed() const override { return buf_.empty(); }
    offile_off_t avail() const override { return (offile_off_t)CAP; }
    offile_off_t write(const void *b, offile_off_t n) override {
        if (!status_.good())
            return 0;
        const char *p = (const char *)b;
        size_t left = (size_t)n;
        while (left > 0) {
            size_t k = std::min(left, CAP - buf_.size());
            buf_.insert(buf_.end(), p, p + k);
            p += k;
            left -= k;
            if (buf_.size() == CAP)
                flush();
            if (!status_.good())
                return (offile_off_t)((size_t)n - left);
        }
        return n;
    }
    void flush() override {
        size_t done = 0;
        while (status_.good() && done < buf_.size()) {
            ssize_t k = ::write(fd_, buf_.data() + done, buf_.size() - done);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                err_ = errno;
                status_ = EC_InvalidStream;
            } else {
                done += (size_t)k;
            }
        }
        buf_.clear();
    }
    int error() const { return err_; }

  private:
    static const size_t CAP = (size_t)256 << 10;
    int fd_, err_ = 0;
    std::vector<char> buf_;
    OFCondition status_ = EC_Normal;
};

class file_stream : public DcmOutputStream {
  public:
    explicit file_stream(int fd) : DcmOutputStream(&cons_), cons_(fd) {}
    int error() const { return cons_.error(); }

  private:
    file_consumer cons_;
};

} // namespace

struct sp__writer {
    sp_pyramid *p;
    sp_pyramid_names fin;
    std::string tmp_dir, tmp_json, tmp_spool, spool_name;
    int fd = -1;
    sp__spool *spool = nullptr;
    std::vector<frame_index> idx;
    std::thread dict; /* loads DCMTK's data dictionary */
};

static void dw_free(sp__writer *w) {
    if (w->dict.joinable())
        w->dict.join();
    sp__spool_free(w->spool);
    if (w->fd >= 0)
        close(w->fd);
    sp_pyramid_names_free(&w->fin);
    delete w;
}

static void remove_dir(const std::string &d) {
    if (!d.empty())
        sp_remove_tree(d.c_str(), nullptr);
}

static void dw_abort(sp__writer *w) {
    if (!w)
        return;
    if (!w->tmp_spool.empty())
        std::remove(w->tmp_spool.c_str());
    remove_dir(w->tmp_dir);
    if (!w->tmp_json.empty())
        std::remove(w->tmp_json.c_str());
    dw_free(w);
}

static std::string owned(char *s) {
    std::string r = s ? s : "";
    std::free(s);
    return r;
}

static sp__writer *dw_open(sp_pyramid *p, sp_error *err) {
    const char *out = sp__pyramid_output(p);
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    auto *w = new (std::nothrow) sp__writer;
    if (!w) {
        sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
        return nullptr;
    }
    w->p = p;
    try {
        if (!sp_pyramid_names_of(&w->fin, out, SP_CONTAINER_DICOM))
            throw std::bad_alloc();
        w->spool_name = std::string(w->fin.main) + ".spool";
        if (!p->prm.opts.force && sp_path_exists(w->fin.main)) {
            sp_error_set(err, SP_ERR_OUTPUT, w->fin.main,
                         "already exists (use --force to replace it)");
            dw_abort(w);
            return nullptr;
        }
        sp__tiler_clean_stale(w->fin.main);
        sp__tiler_clean_stale(w->fin.sidecar);
        sp__tiler_clean_stale(w->spool_name.c_str());
        w->tmp_dir = owned(sp__tiler_temp_name(w->fin.main));
        w->tmp_json = owned(sp__tiler_temp_name(w->fin.sidecar));
        w->tmp_spool = owned(sp__tiler_temp_name(w->spool_name.c_str()));
        p->final_main = strdup(w->fin.main);
        if (w->tmp_dir.empty() || w->tmp_json.empty() || w->tmp_spool.empty() ||
            !p->final_main)
            throw std::bad_alloc();
        w->idx.resize((size_t)p->nlevels);
        for (int d = 0; d < p->nlevels; d++) {
            size_t k = (size_t)(p->lv[d].cols * p->lv[d].rows);
            w->idx[(size_t)d].off.assign(k, 0);
            w->idx[(size_t)d].len.assign(k, 0);
        }
    } catch (const std::bad_alloc &) {
        sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
        dw_abort(w);
        return nullptr;
    }
    w->fd =
        open(w->tmp_spool.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno, "cannot create");
        w->tmp_spool.clear();
        dw_abort(w);
        return nullptr;
    }
    w->spool = sp__spool_create(w->fd, p->threads);
    if (!w->spool) {
        sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
        dw_abort(w);
        return nullptr;
    }
    try {
        w->dict = std::thread([] {
            dcmDataDict.rdlock();
            dcmDataDict.rdunlock();
        });
    } catch (const std::system_error &) {
        /* no thread: the first tag of the finish loads it */
    }
    return w;
}

static bool dw_put(sp__writer *w, int t, int d, int64_t col, int64_t row,
                   const uint8_t *data, size_t n, sp_error *err) {
    const size_t padded = n + (n & 1);
    const size_t i = (size_t)(row * w->p->lv[d].cols + col);
    w->idx[(size_t)d].len[i] = (uint32_t)padded;
    /* its offset lands in the index when its run is written */
    return sp__spool_put(w->spool, t, data, n, n & 1, &w->idx[(size_t)d].off[i],
                         w->fin.main, err);
}

namespace {

struct ids {
    std::string study, series, frame_of_ref, specimen, dim_org, date, time, dt;
    std::vector<Uint8> icc; /* sRGB, from lcms2; even length */
};

bool srgb_profile(std::vector<Uint8> *out) {
    cmsHPROFILE h = cmsCreate_sRGBProfile();
    cmsUInt32Number n = 0;
    bool ok = h && cmsSaveProfileToMem(h, nullptr, &n) && n > 0;
    if (ok) {
        out->resize(n + (n & 1));
        ok = cmsSaveProfileToMem(h, out->data(), &n);
    }
    if (h)
        cmsCloseProfile(h);
    return ok;
}

bool put(DcmItem *it, const DcmTagKey &k, const std::string &v) {
    return it->putAndInsertString(DcmTag(k), v.c_str()).good();
}

/* A sequence item inserted into `it` under `k` (created when absent). */
DcmItem *item(DcmItem *it, const DcmTagKey &k) {
    DcmItem *out = nullptr;
    it->findOrCreateSequenceItem(k, out, -2);
    return out;
}

/* One coded entry (code value, scheme, meaning) into item `it`. */
void code(DcmItem *it, const char *value, const char *scheme,
          const char *meaning) {
    put(it, DCM_CodeValue, value);
    put(it, DCM_CodingSchemeDesignator, scheme);
    put(it, DCM_CodeMeaning, meaning);
}

/* The user's attributes: a JSON object of keyword -> string. */
bool apply_user(DcmDataset *ds, const char *json, const char *out,
                sp_error *err) {
    if (!json || !*json)
        return true;
    json_object *o = json_tokener_parse(json);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return sp_error_set(err, SP_ERR_USAGE, out,
                            "DICOM attributes: not a JSON object");
    }
    bool ok = true;
    json_object_object_foreach(o, key, val) {
        DcmTag tag;
        if (DcmTag::findTagFromName(key, tag).bad()) {
            ok = sp_error_set(err, SP_ERR_USAGE, out,
                              "DICOM attributes: '%s' is not a DICOM keyword",
                              key);
            break;
        }
        if (!json_object_is_type(val, json_type_string)) {
            ok =
                sp_error_set(err, SP_ERR_USAGE, out,
                             "DICOM attributes: %s: a string is expected", key);
            break;
        }
        /* patient, study, series and specimen words; not what makes the
         * file what it is (its class, UIDs of its own, pixel layout) */
        static const char *const fixed[] = {"SOPClassUID",
                                            "SOPInstanceUID",
                                            "ImageType",
                                            "Modality",
                                            "FrameOfReferenceUID",
                                            "InstanceNumber",
                                            "SpecificCharacterSet",
                                            "DimensionOrganizationType",
                                            nullptr};
        bool refused = false;
        for (const char *const *f = fixed; *f; f++)
            refused = refused || std::strcmp(*f, key) == 0;
        DcmEVR vr = tag.getEVR();
        Uint16 g = tag.getGroup();
        if (refused || vr == EVR_SQ || vr == EVR_OB || vr == EVR_OW ||
            vr == EVR_OF || vr == EVR_OD || vr == EVR_OL || vr == EVR_OV ||
            vr == EVR_UN ||
            (g != 0x0008 && g != 0x0010 && g != 0x0020 && g != 0x0032 &&
             g != 0x0040)) {
            ok = sp_error_set(err, SP_ERR_USAGE, out,
                              "DICOM attributes: %s cannot be set", key);
            break;
        }
        if (ds->putAndInsertString(tag, json_object_get_string(val)).bad()) {
            ok = sp_error_set(err, SP_ERR_USAGE, out,
                              "DICOM attributes: %s: value refused", key);
            break;
        }
    }
    json_object_put(o);
    return ok;
}

} // namespace

static bool write_level(sp__writer *w, int d, const ids &id, sp_error *err) {
    const sp_pyramid *p = w->p;
    const sp__plevel *L = &p->lv[d];
    const sp_source_info *src = &p->prm.source;
    const char *out = w->fin.main;
    const frame_index &fx = w->idx[(size_t)d];
    const size_t nframes = fx.off.size();
    DcmFileFormat ff;
    DcmDataset *ds = ff.getDataset();
    const std::string sop = new_uid();
    const double f = (double)((int64_t)1 << d);

    /* SOP common, patient, study, series, equipment */
    put(ds, DCM_SpecificCharacterSet, "ISO_IR 192");
    put(ds, DCM_SOPClassUID, UID_VLWholeSlideMicroscopyImageStorage);
    put(ds, DCM_SOPInstanceUID, sop);
    put(ds, DCM_ImageType,
        d == 0 ? "ORIGINAL\\PRIMARY\\VOLUME\\NONE"
               : "DERIVED\\PRIMARY\\VOLUME\\RESAMPLED");
    put(ds, DCM_StudyDate, id.date);
    put(ds, DCM_ContentDate, id.date);
    put(ds, DCM_StudyTime, id.time);
    put(ds, DCM_ContentTime, id.time);
    put(ds, DCM_AcquisitionDateTime, id.dt);
    put(ds, DCM_AccessionNumber, "");
    put(ds, DCM_Modality, "SM");
    put(ds, DCM_Manufacturer, "slidepipe");
    put(ds, DCM_ReferringPhysicianName, "");
    put(ds, DCM_ManufacturerModelName, "slidepipe");
    put(ds, DCM_DeviceSerialNumber, "0");
    put(ds, DCM_SoftwareVersions, SP_VERSION);
    put(ds, DCM_PatientName, "");
    put(ds, DCM_PatientID, "");
    put(ds, DCM_PatientBirthDate, "");
    put(ds, DCM_PatientSex, "");
    put(ds, DCM_StudyInstanceUID, id.study);
    put(ds, DCM_SeriesInstanceUID, id.series);
    put(ds, DCM_StudyID, "");
    put(ds, DCM_SeriesNumber, "1");
    put(ds, DCM_InstanceNumber, std::to_string(d + 1));
    put(ds, DCM_PatientOrientation, "");
    put(ds, DCM_FrameOfReferenceUID, id.frame_of_ref);
    put(ds, DCM_PositionReferenceIndicator, "SLIDE_CORNER");
    put(ds, DCM_BurnedInAnnotation, "NO");
    put(ds, DCM_SpecimenLabelInImage, "NO");
    put(ds, DCM_FocusMethod, "AUTO");
    put(ds, DCM_ExtendedDepthOfField, "NO");
    put(ds, DCM_VolumetricProperties, "VOLUME");
    put(ds, DCM_ImageOrientationSlide, "0\\-1\\0\\-1\\0\\0");
    put(ds, DCM_DimensionOrganizationType, "TILED_FULL");
    put(ds, DCM_TotalPixelMatrixFocalPlanes, "1");
    put(ds, DCM_NumberOfOpticalPaths, "1");

    /* image pixel */
    ds->putAndInsertUint16(DCM_SamplesPerPixel, 3);
    /* the encoder subsamples chroma for DICOM at every quality
     * (sp__jpeg420_codec): the WSM IOD knows no YBR_FULL */
    /* with passthrough, level 0 holds the slide's tiles: RGB components
     * (Aperio) or subsampled YCbCr (4:4:4 YCbCr is never copied) */
    put(ds, DCM_PhotometricInterpretation,
        d == 0 && p->copy0 && p->stored0.rgb ? "RGB" : "YBR_FULL_422");
    ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
    ds->putAndInsertUint16(DCM_Rows, (Uint16)p->T);
    ds->putAndInsertUint16(DCM_Columns, (Uint16)p->T);
    ds->putAndInsertUint16(DCM_BitsAllocated, 8);
    ds->putAndInsertUint16(DCM_BitsStored, 8);
    ds->putAndInsertUint16(DCM_HighBit, 7);
    ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
    put(ds, DCM_NumberOfFrames, std::to_string(nframes));
    ds->putAndInsertUint32(DCM_TotalPixelMatrixColumns, (Uint32)L->w);
    ds->putAndInsertUint32(DCM_TotalPixelMatrixRows, (Uint32)L->h);
    put(ds, DCM_LossyImageCompression, "01");
    put(ds, DCM_LossyImageCompressionMethod, "ISO_10918_1");
    {
        uint64_t bytes = 0;
        for (uint32_t n : fx.len)
            bytes += n;
        double raw = (double)nframes * p->T * p->T * 3;
        put(ds, DCM_LossyImageCompressionRatio,
            fmt("%.2f", bytes ? raw / (double)bytes : 1.0));
    }

    /* where the pixel matrix lies on the slide, in mm */
    double mpp_x = src->mpp_x > 0 ? src->mpp_x : 0.25;
    double mpp_y = src->mpp_y > 0 ? src->mpp_y : mpp_x;
    double sx = mpp_x * f / 1000.0, sy = mpp_y * f / 1000.0;
    ds->putAndInsertFloat32(DCM_ImagedVolumeWidth,
                            (Float32)(mpp_x * (double)p->lv[0].w / 1000.0));
    ds->putAndInsertFloat32(DCM_ImagedVolumeHeight,
                            (Float32)(mpp_y * (double)p->lv[0].h / 1000.0));
    ds->putAndInsertFloat32(DCM_ImagedVolumeDepth, 0.001f);
    DcmItem *orig = item(ds, DCM_TotalPixelMatrixOriginSequence);
    put(orig, DCM_XOffsetInSlideCoordinateSystem, "0");
    put(orig, DCM_YOffsetInSlideCoordinateSystem, "0");

    /* functional groups: pixel measures, frame type, optical path */
    DcmItem *sh = item(ds, DCM_SharedFunctionalGroupsSequence);
    DcmItem *pm = item(sh, DCM_PixelMeasuresSequence);
    put(pm, DCM_PixelSpacing, fmt("%.10g", sy) + "\\" + fmt("%.10g", sx));
    put(pm, DCM_SliceThickness, "0.001");
    DcmItem *ft = item(sh, DCM_WholeSlideMicroscopyImageFrameTypeSequence);
    put(ft, DCM_FrameType,
        d == 0 ? "ORIGINAL\\PRIMARY\\VOLUME\\NONE"
               : "DERIVED\\PRIMARY\\VOLUME\\RESAMPLED");
    DcmItem *opi = item(sh, DCM_OpticalPathIdentificationSequence);
    put(opi, DCM_OpticalPathIdentifier, "1");

    /* multi-frame dimensions: TILED_FULL indexes none */
    DcmItem *dorg = item(ds, DCM_DimensionOrganizationSequence);
    put(dorg, DCM_DimensionOrganizationUID, id.dim_org);

    /* optical path: brightfield, full spectrum */
    DcmItem *op = item(ds, DCM_OpticalPathSequence);
    put(op, DCM_OpticalPathIdentifier, "1");
    code(item(op, DCM_IlluminationTypeCodeSequence), "111744", "DCM",
         "Brightfield illumination");
    code(item(op, DCM_IlluminationColorCodeSequence), "414298005", "SCT",
         "Full Spectrum");
    if (src->objective_power > 0)
        put(op, DCM_ObjectiveLensPower, fmt("%g", src->objective_power));
    /* colour images carry their profile: the frames are sRGB (lcms2's) */
    op->putAndInsertUint8Array(DCM_ICCProfile, id.icc.data(),
                               (unsigned long)id.icc.size());
    put(op, DCM_ColorSpace, "SRGB");

    /* specimen: a container and one specimen, identified by us */
    put(ds, DCM_ContainerIdentifier, "1");
    ds->insertEmptyElement(DCM_IssuerOfTheContainerIdentifierSequence);
    code(item(ds, DCM_ContainerTypeCodeSequence), "433466003", "SCT",
         "Microscope slide");
    DcmItem *sp = item(ds, DCM_SpecimenDescriptionSequence);
    put(sp, DCM_SpecimenIdentifier, "1");
    put(sp, DCM_SpecimenUID, id.specimen);
    sp->insertEmptyElement(DCM_IssuerOfTheSpecimenIdentifierSequence);
    sp->insertEmptyElement(DCM_SpecimenPreparationSequence);
    ds->insertEmptyElement(DCM_AcquisitionContextSequence);

    if (!apply_user(ds, p->prm.opts.dicom_attributes, out, err))
        return false;

    /* the frames, from the spool; the offset table first */
    uint64_t total = 0;
    for (uint32_t n : fx.len)
        total += 8 + (uint64_t)n;
    const bool eot = total > UINT64_C(0xFFFFFFFF);
    auto *seq = new DcmPixelSequence(DCM_PixelSequenceTag);
    auto *bot = new DcmPixelItem(DCM_PixelItemTag);
    std::vector<Uint32> table;
    std::vector<Uint64> eot_off, eot_len;
    uint64_t at = 0;
    for (size_t i = 0; i < nframes; i++) {
        if (fx.len[i] == 0) {
            delete bot;
            delete seq;
            return sp_error_set(err, SP_ERR_INTERNAL, out,
                                "level %d frame %zu missing", d, i + 1);
        }
        if (eot) {
            eot_off.push_back(at);
            eot_len.push_back(fx.len[i]);
        } else {
            table.push_back((Uint32)at);
        }
        at += 8 + (uint64_t)fx.len[i];
    }
    if (!eot)
        bot->putUint8Array(reinterpret_cast<const Uint8 *>(table.data()),
                           (Uint32)(table.size() * 4));
    seq->insert(bot);
    for (size_t i = 0; i < nframes; i++) {
        auto *it = new DcmPixelItem(DCM_PixelItemTag);
        it->createValueFromTempFile(
            new spool_factory(w->fd, fx.off[i], fx.len[i]), fx.len[i],
            EBO_LittleEndian);
        seq->insert(it);
    }
    auto *pd = new DcmPixelData(DCM_PixelData);
    pd->putOriginalRepresentation(EXS_JPEGProcess1, nullptr, seq);
    ds->insert(pd, true);
    if (eot) {
        auto *e1 = new DcmOther64bitVeryLong(DCM_ExtendedOffsetTable);
        e1->putUint64Array(eot_off.data(), (unsigned long)eot_off.size());
        ds->insert(e1, true);
        auto *e2 = new DcmOther64bitVeryLong(DCM_ExtendedOffsetTableLengths);
        e2->putUint64Array(eot_len.data(), (unsigned long)eot_len.size());
        ds->insert(e2, true);
    }
    char name[32];
    std::snprintf(name, sizeof name, "/level-%d.dcm", d);
    std::string path = w->tmp_dir + name;
    /* as DcmFileFormat::saveFile does, through our file stream */
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sp_error_set(err, SP_ERR_OUTPUT, out,
                            "cannot create level %d: %s", d,
                            std::strerror(errno));
    file_stream fs(fd);
    DcmWriteCache wcache;
    ff.transferInit();
    OFCondition c =
        ff.write(fs, EXS_JPEGProcess1, EET_ExplicitLength, &wcache,
                 EGL_recalcGL, EPD_noChange, 0, 0, 0, EWM_fileformat);
    ff.transferEnd();
    if (c.good())
        fs.flush();
    if (c.good())
        c = fs.status();
    int e = fs.error();
    if (close(fd) != 0 && e == 0 && c.good())
        e = errno;
    if (e != 0)
        return sp_error_set(err, SP_ERR_OUTPUT, out,
                            "cannot write level %d: %s", d, std::strerror(e));
    if (c.bad())
        return sp_error_set(err, SP_ERR_OUTPUT, out,
                            "cannot write level %d: %s", d, c.text());
    return true;
}

static bool dw_finish(sp__writer *w, const char *sidecar, size_t sidecar_n,
                      sp_error *err) {
    const sp_pyramid *p = w->p;
    ids id;
    id.study = new_uid();
    id.series = new_uid();
    id.frame_of_ref = new_uid();
    id.specimen = new_uid();
    id.dim_org = new_uid();
    if (!srgb_profile(&id.icc)) {
        sp_error_set(err, SP_ERR_INTERNAL, w->fin.main,
                     "cannot make the sRGB ICC profile (lcms2)");
        dw_abort(w);
        return false;
    }
    time_t now = time(nullptr);
    struct tm tm;
    gmtime_r(&now, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y%m%d", &tm);
    id.date = b;
    std::strftime(b, sizeof b, "%H%M%S", &tm);
    id.time = b;
    id.dt = id.date + id.time + "+0000";
    /* the user's study/series UIDs, when given, are the ones to share */
    if (p->prm.opts.dicom_attributes) {
        json_object *o = json_tokener_parse(p->prm.opts.dicom_attributes);
        json_object *v = nullptr;
        if (o && json_object_object_get_ex(o, "StudyInstanceUID", &v) &&
            json_object_is_type(v, json_type_string))
            id.study = json_object_get_string(v);
        if (o && json_object_object_get_ex(o, "SeriesInstanceUID", &v) &&
            json_object_is_type(v, json_type_string))
            id.series = json_object_get_string(v);
        json_object_put(o);
    }
    if (!sp__spool_flush(w->spool, w->fin.main, err)) {
        dw_abort(w);
        return false;
    }
    if (mkdir(w->tmp_dir.c_str(), 0777) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno, "cannot create");
        w->tmp_dir.clear();
        dw_abort(w);
        return false;
    }
    if (w->dict.joinable())
        w->dict.join();
    /* level 0 on a thread of its own (inline if none can start), the
     * other levels here */
    bool ok0 = false;
    sp_error err0 = {};
    auto level0 = [&] {
        try {
            ok0 = write_level(w, 0, id, &err0);
        } catch (const std::bad_alloc &) {
            sp_error_set(&err0, SP_ERR_NOMEM, w->fin.main, "out of memory");
        }
    };
    std::thread t0;
    try {
        t0 = std::thread(level0);
    } catch (const std::system_error &) {
        level0();
    }
    bool ok = true;
    try {
        for (int d = 1; d < p->nlevels && ok; d++)
            ok = write_level(w, d, id, err);
    } catch (const std::bad_alloc &) {
        sp_error_set(err, SP_ERR_NOMEM, w->fin.main, "out of memory");
        ok = false;
    }
    if (t0.joinable())
        t0.join();
    if (ok && !ok0)
        *err = err0;
    if (!ok || !ok0) {
        dw_abort(w);
        return false;
    }
    if (!sp__write_file(w->tmp_json.c_str(), (const uint8_t *)sidecar,
                        sidecar_n, err)) {
        dw_abort(w);
        return false;
    }
    if (p->prm.opts.force)
        sp_remove_tree(w->fin.main, nullptr);
    if (rename(w->tmp_dir.c_str(), w->fin.main) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno, "cannot rename");
        dw_abort(w);
        return false;
    }
    w->tmp_dir.clear();
    if (rename(w->tmp_json.c_str(), w->fin.sidecar) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.sidecar, errno,
                       "cannot rename");
        sp_remove_tree(w->fin.main, nullptr);
        dw_abort(w);
        return false;
    }
    w->tmp_json.clear();
    std::remove(w->tmp_spool.c_str());
    w->tmp_spool.clear();
    dw_free(w);
    return true;
}

extern "C" const sp__writer_ops sp__dicom_writer = {
    "dicom", dw_open, dw_put, dw_finish, dw_abort,
};
