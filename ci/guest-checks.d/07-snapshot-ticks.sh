# shellcheck shell=dash
# snapshot-ticks (ci/snapshot-host.sh): the guest's heartbeat across a
# snapshot and restores. Prints SNAP-TICK <n> uptime=<s> stalls=<k> once a
# second, forever (the host ends tandem): n counts on in RAM, so a restored
# guest goes on from the snapshot's count and a rebooted one would start
# again at 1; uptime is the guest's clock; stalls counts RCU stall, soft
# lockup, hung task and clocksource-unstable lines in the kernel log.
check_snapshot_ticks() {
    local n=0 uptime stalls
    while :; do
        n=$((n + 1))
        read -r uptime _ </proc/uptime
        stalls=$(dmesg | grep -cE 'rcu.*(stall|detected)|soft lockup|hung task|clocksource.*unstable')
        echo "SNAP-TICK $n uptime=$uptime stalls=$stalls"
        sleep 1
    done
}
check_wanted snapshot-ticks && check_snapshot_ticks
