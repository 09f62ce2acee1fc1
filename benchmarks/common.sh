# Shared by the benchmark scripts (sourced, POSIX sh).
#
# sp_timed NAME RESULTS CMD...: run CMD under GNU time -v, its output in
# $out/NAME.log, and append "NAME wall_s cpu_s max_rss_kB" to RESULTS
# (cpu = user + sys; max RSS of the largest single process). A failing
# command stops the benchmark with the tail of its log.
sp_timed() {
    _name=$1; _results=$2; shift 2
    sync
    /usr/bin/time -v -o "$out/$_name.time" "$@" >"$out/$_name.log" 2>&1 || {
        echo "$_name failed ($?):" >&2; tail -20 "$out/$_name.log" >&2; exit 1; }
    awk -v n="$_name" '
        /Elapsed \(wall clock\)/ { split($NF, t, ":");
            w = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
        /User time/ { u = $NF } /System time/ { s = $NF }
        /Maximum resident set size/ { r = $NF }
        END { printf "%s %.2f %.2f %d\n", n, w, u + s, r }' \
        "$out/$_name.time" >>"$_results"
}

# sp_batch_slides DIR SYNTH SCALE: the twenty slides of mixed sizes the
# batch benchmarks share (twelve small, six medium, two large), generated
# once into DIR; prints their level-0 megapixels in all.
sp_batch_slides() {
    _dir=$1; _synth=$2; _scale=$3
    mkdir -p "$_dir"
    _i=0
    set -- 2000 1500  2400 1800  2600 2000  3000 2200  3200 2400  3600 2700 \
        4000 3000  4400 3300  2200 1700  2800 2100  3400 2600  3800 2900 \
        8000 6000  9000 6800  10000 7500  11000 8200  12000 9000  13000 9800 \
        20000 15000  24000 18000
    while [ $# -ge 2 ]; do
        _w=$(awk -v v="$1" -v f="$_scale" 'BEGIN { printf "%d", v * f }')
        _h=$(awk -v v="$2" -v f="$_scale" 'BEGIN { printf "%d", v * f }')
        shift 2
        _i=$((_i + 1))
        _f=$(printf "%s/slide%02d-%dx%d.svs" "$_dir" "$_i" "$_w" "$_h")
        [ -f "$_f" ] || "$_synth" -o "$_f" --width "$_w" --height "$_h" \
            --seed "$_i" --quiet
    done
    for _f in "$_dir"/*.svs; do basename "$_f" .svs; done |
        sed 's/.*-\([0-9]*\)x\([0-9]*\)$/\1 \2/' |
        awk '{ s += $1 * $2 } END { printf "%.0f", s / 1e6 }'
}
