#!/bin/sh
# docs/ARCHITECTURE.md's module drawing, checked against the #includes:
# each module includes only its own headers and those of the modules its
# arrow points to (tiler and analysis never each other; store sees no
# slide; nothing includes cli or viewer but cli).
cd "$(dirname "$0")/.." || exit 1
allowed() {
    case "$1" in
    util) echo "util.h" ;;
    ingest) echo "ingest.h ingest_private.h util.h" ;;
    tiler) echo "tiler.h tiler_private.h ingest.h util.h" ;;
    analysis) echo "analysis.h analysis_private.h ingest.h util.h" ;;
    store) echo "store.h store_private.h util.h" ;;
    pipeline) echo "pipeline.h pipeline_private.h batch.h batch_private.h batch_mpi.h tiler.h analysis.h store.h ingest.h util.h" ;;
    viewer) echo "viewer.h viewer_private.h tiler.h store.h ingest.h util.h" ;;
    cli) echo "cli.h pipeline.h batch.h batch_mpi.h viewer.h store.h tiler.h analysis.h ingest.h util.h" ;;
    tools) echo "synth.h util.h" ;;
    esac
}
bad=0
for m in util ingest tiler analysis store pipeline viewer cli tools; do
    ok=$(allowed "$m")
    for f in $(git ls-files "$m/*.c" "$m/*.h" "$m/*.cpp"); do
        for h in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
            case " $ok " in
            *" $h "*) ;;
            *) echo "$f includes $h: not on $m's arrows (docs/ARCHITECTURE.md)"
               bad=$((bad + 1)) ;;
            esac
        done
    done
done
echo "$bad includes off the drawing"
[ "$bad" -eq 0 ]
