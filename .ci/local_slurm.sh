#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the SLURM end-to-end test (root, no systemd).
#   .ci/local_slurm.sh install   # apt-get slurm-wlm + munge (Debian)
#   .ci/local_slurm.sh up        # write slurm.conf, start munged, slurmctld, slurmd; wait until idle
#   .ci/local_slurm.sh down      # stop the daemons
# State lives in $SLURM_STATE (default /tmp/conta-slurm); completed jobs are logged by
# jobcomp/filetxt to $SLURM_STATE/jobcomp.log, which the test reads as proof of sbatch.
set -euo pipefail
STATE=${SLURM_STATE:-/tmp/conta-slurm}
CONF_DIR=/etc/slurm
HOST=$(hostname)

install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
}

up() {
  mkdir -p "$STATE"/{ctld,spool} "$CONF_DIR" /run/munge /var/log/munge /var/lib/munge
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  local mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=conta-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
MinJobAge=600
NodeName=$HOST CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
  pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'; then
      echo "slurm: node $HOST up"; return 0
    fi
    sleep 1
  done
  echo "slurm: node did not come up" >&2; sinfo >&2 || true; tail -n 20 "$STATE"/*.log >&2 || true
  return 1
}

down() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  echo "slurm: stopped"
}

"${1:?usage: $0 install|up|down}"
