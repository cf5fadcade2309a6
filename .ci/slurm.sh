#!/usr/bin/env bash
# A single-node SLURM cluster (controller, one node, accounting) for tests, as root,
# without systemd.
#
#   .ci/slurm.sh up DIR     install (apt, only what is missing) and start the daemons;
#                           config, state, logs and PIDs live under DIR
#   .ci/slurm.sh down DIR   stop exactly the daemons `up` started (by recorded PID)
#
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf (the tests set it from
# GBI_SLURM_CLUSTER=DIR). Two partitions: `low` (default, PriorityTier=1) and `high`
# (PriorityTier=10): a job on `high` preempts a `low` job, which SLURM signals (USR2)
# and requeues. Accounting (slurmdbd + MariaDB) is on so job states are known.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 up|down DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
chmod 755 "$dir"  # the daemons run as munge, mysql and slurm: they must reach DIR
pids="$dir/pids"

stop_all() {
  [ -f "$pids" ] || return 0
  # Reverse start order: slurmd, slurmctld, slurmdbd, mariadb, munged.
  tac "$pids" | while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      echo "stopped $name ($pid)"
    fi
  done
  rm -f "$pids"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "error: $what did not come up within ${secs}s; logs in $dir" >&2
  return 1
}

start() {  # start NAME COMMAND...  (background, PID recorded)
  local name=$1
  shift
  "$@" >"$dir/log/$name.out" 2>&1 &
  echo "$name $!" >>"$pids"
}

if [ "$cmd" = down ]; then
  stop_all
  exit 0
fi
if [ "$cmd" != up ]; then
  echo "usage: $0 up|down DIR" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: starting SLURM needs root (daemons run as root, munge and slurm users)" >&2
  exit 1
fi

t0=$(date +%s.%N)
need=()
for pair in slurmctld:slurm-wlm munged:munge slurmdbd:slurmdbd mariadbd:mariadb-server; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "error: missing ${need[*]} and no apt-get" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
stop_all
mkdir -p "$dir/log" "$dir/state" "$dir/spool" "$dir/munge" "$dir/munge-run" "$dir/mysql" "$dir/run"
chown slurm:slurm "$dir/state" "$dir/log"
chown munge:munge "$dir/munge" "$dir/munge-run"
chmod 700 "$dir/munge"
chmod 755 "$dir/munge-run"
chown mysql:mysql "$dir/mysql" "$dir/run" 2>/dev/null || true

# munge on its standard socket (every SLURM client looks there), with a key under DIR.
[ -f "$dir/munge/munge.key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null; }
chown munge:munge "$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 755 /run/munge
sock=/run/munge/munge.socket.2
if [ -S "$sock" ] && munge -n >/dev/null 2>&1; then
  echo "error: a munged is already running on $sock; stop it first" >&2
  exit 1
fi
start munged runuser -u munge -- munged -F --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munge-run/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munge.seed"
wait_for 10 munged test -S "$sock"

# MariaDB for accounting.
if [ ! -d "$dir/mysql/mysql" ]; then
  mariadb-install-db --user=mysql --datadir="$dir/mysql" --auth-root-authentication-method=socket \
    >"$dir/log/mariadb-install.out" 2>&1
fi
dbsock="$dir/run/mysqld.sock"
start mariadb mariadbd --user=mysql --datadir="$dir/mysql" --socket="$dbsock" \
  --skip-networking=0 --bind-address=127.0.0.1 --port=3307 --pid-file="$dir/run/mysqld.pid" \
  --log-error="$dir/log/mariadb.log"
wait_for 30 mariadb mariadb --socket="$dbsock" -e "select 1"
mariadb --socket="$dbsock" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

cpus=4  # more than the cores so small test jobs share the machine (config_overrides)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
EOF
chown slurm:slurm "$dir/slurmdbd.conf"
chmod 600 "$dir/slurmdbd.conf"
cat >"$dir/slurm.conf" <<EOF
ClusterName=gbi
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
KillWait=15
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=low Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE OverSubscribe=NO
PartitionName=high Nodes=localhost Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF OverSubscribe=NO
EOF
export SLURM_CONF="$dir/slurm.conf"
start slurmdbd slurmdbd -D  # reads slurmdbd.conf beside $SLURM_CONF
wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
sacctmgr -i add cluster gbi >/dev/null 2>&1 || true
start slurmctld slurmctld -D -f "$dir/slurm.conf"
wait_for 30 slurmctld scontrol ping
start slurmd slurmd -D -N localhost -f "$dir/slurm.conf"
wait_for 30 "slurmd (node idle)" bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
sacctmgr -i add account gbi cluster=gbi >/dev/null 2>&1 || true
sacctmgr -i add user root account=gbi cluster=gbi >/dev/null 2>&1 || true
t1=$(date +%s.%N)
printf 'SLURM up in %.1f s: export SLURM_CONF=%s\n' "$(echo "$t1 - $t0" | bc)" "$dir/slurm.conf"
