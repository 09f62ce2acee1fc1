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
