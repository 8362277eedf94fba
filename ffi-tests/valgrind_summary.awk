# Sums memcheck's per-process summaries (one log per process, forked children
# included) and fails on any error or any byte definitely or indirectly lost.
# Possibly-lost and still-reachable bytes are reported, not failed: see the
# check-valgrind comment in the Makefile for why they appear.
function bytes(line,   a) { split(line, a, ":"); gsub(/[ ,]/, "", a[2]); sub(/bytes.*/, "", a[2]); return a[2] + 0 }
FNR == 1 { procs++ }
/ERROR SUMMARY:/ { n = $0; sub(/.*ERROR SUMMARY: /, "", n); sub(/ errors.*/, "", n); errors += n; if (n + 0 > 0) bad[FILENAME] = 1 }
/definitely lost:/ { v = bytes($0); definite += v; if (v > 0) bad[FILENAME] = 1 }
/indirectly lost:/ { v = bytes($0); indirect += v; if (v > 0) bad[FILENAME] = 1 }
/possibly lost:/ { possibly += bytes($0) }
/still reachable:/ { reachable += bytes($0) }
END {
    for (f in bad) { print "valgrind: problems in " f; while ((getline l < f) > 0) print l; nbad++ }
    printf "valgrind: %d processes, %d errors, %d bytes definitely lost, %d indirectly lost (possibly lost %d, still reachable %d)\n", procs, errors, definite, indirect, possibly, reachable
    exit nbad > 0 ? 1 : 0
}
