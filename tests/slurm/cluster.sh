#!/usr/bin/env bash
# cluster.sh - hpc-curator's own Slurm test cluster: one machine, N virtual nodes.
#
#   cluster.sh install        apt-get install the Debian 12 packages that are missing
#   cluster.sh start  DIR     fresh cluster in DIR; returns once every node is idle
#   cluster.sh stop   DIR     cancel its jobs, stop exactly the daemons recorded in DIR
#   cluster.sh status DIR     daemons of DIR and `sinfo`; exit 0 only if all are running
#   cluster.sh env    DIR     prints `export SLURM_CONF=DIR/etc/slurm.conf`
#
# What runs (all as root, all on 127.0.0.1, Slurm 22.05 from Debian 12):
#   munged (private socket DIR/munge/munge.sock), MariaDB + slurmdbd (so that `sacct`
#   works; submitit needs it to see timed-out or killed jobs), slurmctld, and one
#   `slurmd -N nK` per virtual node. Clients need SLURM_CONF=DIR/etc/slurm.conf.
#   Keep DIR short: unix sockets live below it and their paths must stay < 108 chars.
#
# Knobs (read by `start`):
#   SLC_NODES=4            virtual nodes n1..nN
#   SLC_CPUS=4             CPUs declared per node (may exceed the real cores)
#   SLC_ACCOUNTING=1       0: no MariaDB/slurmdbd (starts faster, but no sacct)
#   SLC_PORT_BASE=16817    slurmctld=BASE, slurmdbd=BASE+1, mariadb=BASE+2, slurmd nK=BASE+10+K
#   SLC_START_TIMEOUT=60   seconds to wait for all nodes to be idle
#   SLC_STOP_TIMEOUT=15    seconds to wait for a daemon after SIGTERM before SIGKILL
#   SLC_CRED_EXPIRE=10     AuthInfo cred_expire: also the wait before a requeued job restarts
#   SLC_GPUS=0             fake GPUs per node: GRES gpu on char devices DIR/fakedev/nvidiaK
#                          (c 1 3, as /dev/null); jobs asking for GPUs get CUDA_VISIBLE_DEVICES
#
# Partitions: `debug` (default, all nodes) and `urgent` (same nodes, higher PriorityTier).
# A job in `urgent` preempts `debug` jobs with PreemptMode=REQUEUE, and JobRequeue=1 makes
# batch jobs requeueable, so both preemption and `scontrol requeue` put a job back in the
# queue under the same job id (SLURM_RESTART_COUNT goes up).
#
# Timing facts (Slurm 22.05 on this 2-core machine, measured):
#   * slurmctld looks at time limits once every 30 s (PERIODIC_TIMEOUT, compiled in; no
#     slurm.conf key - SchedulerParameters, PriorityType, ... - changes it). That same tick
#     sends the `--signal=SIG@N` warning, once the remaining time is <= N + 30 s. So the
#     warning arrives N..N+30 s before the limit (0-30 s EARLY, as sbatch(1) warns), but
#     never before the first tick after the job started. Measured: --time=1 --signal=USR2@50
#     -> USR2 25 s after start (35 s left); --time=2 USR2@50 -> 40 s and 55 s after start
#     (80 s / 65 s left). Every warning is preceded by SIGCONT. Without `B:` it goes to the
#     job steps (srun tasks), not to the batch shell; with `B:` only to the batch shell.
#     For an immediate signal in a test use `scancel --signal=USR2 JOBID`.
#   * The kill comes on the first tick after the limit: 0-30 s late (OverTimeLimit=0 adds
#     nothing), then SIGCONT+SIGTERM, SIGKILL KillWait=5 s later. A --time=1 job is TIMEOUT
#     60-90 s after it started (measured: 85 s).
#   * `scontrol requeue` of a running job, and preemption by an `urgent` job: SIGCONT+SIGTERM
#     to the steps and the batch shell at once (no --signal warning), SIGKILL KillWait later;
#     the job keeps its id (SLURM_RESTART_COUNT=1, 2, ...), goes PENDING with reason
#     BeginTime and is eligible again ~cred_expire+5 s after it ended. With Slurm's default
#     cred_expire=120 that was 128 s from requeue to rerun, so AuthInfo cred_expire is cut
#     to SLC_CRED_EXPIRE (default 10 s; Slurm's minimum is 5): ~20-25 s now.
#   * Pending jobs are scheduled on events (submit, job end; batch_sched_delay=0 makes that
#     immediate) and by periodic passes, cut from 60/30 s to 5 s (sched_interval,
#     bf_interval) so that a requeued job starts soon after its begin time.
set -euo pipefail

NODES=${SLC_NODES:-4}
CPUS=${SLC_CPUS:-4}
ACCOUNTING=${SLC_ACCOUNTING:-1}
PORT_BASE=${SLC_PORT_BASE:-16817}
START_TIMEOUT=${SLC_START_TIMEOUT:-60}
STOP_TIMEOUT=${SLC_STOP_TIMEOUT:-15}
CRED_EXPIRE=${SLC_CRED_EXPIRE:-10}
GPUS=${SLC_GPUS:-0}

say() { printf '[cluster.sh] %s\n' "$*" >&2; }

usage() { sed -n '2,8p' "$0" >&2; exit 2; }

# ---------------------------------------------------------------- packages

BASE_PKGS=(slurmctld slurmd slurm-client munge libpmix-dev)
ACCT_PKGS=(slurmdbd mariadb-server mariadb-client)

missing_packages() {
  local p
  local wanted=("${BASE_PKGS[@]}")
  [[ "$ACCOUNTING" == 1 ]] && wanted+=("${ACCT_PKGS[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || printf '%s\n' "$p"
  done
}

cmd_install() {
  local todo
  mapfile -t todo < <(missing_packages)
  if ((${#todo[@]} == 0)); then
    say "packages present"
    return 0
  fi
  command -v apt-get >/dev/null || { say "ERROR: apt-get not found; cannot install ${todo[*]}"; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef)
  say "installing ${todo[*]}"
  if ! "${apt[@]}" "${todo[@]}" >&2; then
    say "install failed; running apt-get update and retrying"
    apt-get update -q >&2
    "${apt[@]}" "${todo[@]}" >&2
  fi
}

binaries_present() {
  local b
  for b in munged munge slurmctld slurmd sinfo srun sbatch scontrol; do
    command -v "$b" >/dev/null || return 1
  done
  # libpmix-dev: the mpi/pmix plugin dlopens this unversioned library
  compgen -G '/usr/lib/*/pmix2/lib/libpmix.so' >/dev/null || return 1
  if [[ "$ACCOUNTING" == 1 ]]; then
    for b in slurmdbd sacct sacctmgr mariadbd mariadb-install-db mariadb; do
      command -v "$b" >/dev/null || return 1
    done
  fi
}

# ---------------------------------------------------------------- state dir

set_state() {
  [[ -n "${1:-}" ]] || usage
  case "$1" in
    /*) S=${1%/} ;;
    *) S=$PWD/${1%/} ;;
  esac
  [[ "$S" != "" && "$S" != "/" ]] || { say "ERROR: refusing state dir '$1'"; exit 2; }
  CONF=$S/etc/slurm.conf
  MUNGE_SOCK=$S/munge/munge.sock
  MYSQL_SOCK=$S/mysql/mysqld.sock
  if ((${#MYSQL_SOCK} > 100)); then
    say "ERROR: state dir '$S' is too long for unix sockets (keep it under ~80 chars)"
    exit 2
  fi
}

# "pidfile:binary" for every daemon of the state dir, in stop order.
daemon_table() {
  local n k
  n=$(cat "$S/nodes" 2>/dev/null || echo "$NODES")
  for ((k = 1; k <= n; k++)); do echo "$S/run/slurmd-n$k.pid:slurmd"; done
  echo "$S/run/slurmctld.pid:slurmctld"
  if [[ "$(cat "$S/accounting" 2>/dev/null || echo "$ACCOUNTING")" == 1 ]]; then
    echo "$S/run/slurmdbd.pid:slurmdbd"
    echo "$S/mysql/mysqld.pid:mariadbd"
  fi
  echo "$S/munge/munged.pid:munged"
}

# A pid is "ours" only while it is alive, not a zombie, and runs the expected binary
# (guards against a recycled pid).
is_ours() { # pid binary
  local pid=$1 bin=$2 state exe
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
  exe=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ " $exe" == *"/$bin "* || " $exe" == *" $bin "* ]]
}

pid_of() { [[ -r "$1" ]] && tr -dc '0-9' <"$1" 2>/dev/null || true; }

running() { # pidfile binary
  is_ours "$(pid_of "$1")" "$2"
}

# A Slurm client against this cluster, bounded: with munged or slurmctld wedged a client
# call can block for minutes, and stop/status must still finish.
client() { SLURM_CONF=$CONF timeout 10 "$@"; }

# ---------------------------------------------------------------- failure report

log_tails() {
  local f
  for f in "$S"/log/*.log; do
    if [[ -s "$f" ]]; then { echo "----- tail of $f"; tail -n 25 "$f"; } >&2; fi
  done
}

STARTING=0
fail() {
  say "ERROR: $*"
  log_tails
  if ((STARTING)); then
    say "stopping the daemons started so far (logs stay in $S/log)"
    STARTING=0
    cmd_stop "$S" || true
  fi
  say "ERROR: $* (state dir $S)"
  exit 1
}

# ---------------------------------------------------------------- configs

write_slurm_conf() {
  local host mem acct first_id gres_types="" gres=""
  host=$(hostname -s)
  mem=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  # Job ids restart at FirstJobId in a fresh StateSaveLocation. Files named after a job id
  # (submitit's folder/%j, -o slurm-%j.out) from an older cluster would be taken for the
  # new job's, so every fresh start begins at a new id: (epoch % 60000) * 1000 + noise,
  # which stays below the default MaxJobId (67043328).
  first_id=$(((($(date +%s) % 60000) * 1000) + (RANDOM % 900) + 100))
  echo "$first_id" >"$S/first_job_id"
  if [[ "$ACCOUNTING" == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT_BASE + 1))
# with a private munge socket the dbd connection must be told where it is
AccountingStoragePass=$MUNGE_SOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  [[ "$GPUS" =~ ^[1-9][0-9]*$ ]] && gres_types="GresTypes=gpu" gres="Gres=gpu:$GPUS"
  cat >"$CONF" <<EOF
# written by hpc-curator tests/slurm/cluster.sh - regenerated on every start
ClusterName=hpcc
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT_BASE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may run again (see the header)
AuthInfo=socket=$MUNGE_SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd-%n.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# one TmpFS per virtual node: --mpi=pmix keeps per-step dirs there, which collide in a shared /tmp
TmpFS=$S/tmp/%n
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# launchers must ask for --mpi themselves (without it every task is a singleton)
MpiDefault=none
# low, so that the job-array tests cross it (hpc-curator caps --array to it)
MaxArraySize=8
# let slurmd accept CPUs= above the 2 real cores
SlurmdParameters=config_overrides
ReturnToService=2
FirstJobId=$first_id
MinJobAge=600
MailProg=/bin/true
# time limits: no grace past --time, short SIGTERM -> SIGKILL gap; checked every 30 s (header)
OverTimeLimit=0
KillWait=5
# batch jobs are requeueable (scontrol requeue, preemption)
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
$acct
JobCompType=jobcomp/none
$gres_types
NodeName=n[1-$NODES] NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT_BASE + 11))-$((PORT_BASE + 10 + NODES)) CPUs=$CPUS RealMemory=$mem $gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF
}

# Plain files as File= leave CUDA_VISIBLE_DEVICES empty, no File= makes the nodes `inval`.
write_gres_conf() {
  [[ "$GPUS" =~ ^[0-9]+$ ]] || fail "SLC_GPUS must be a number, got '$GPUS'"
  ((GPUS > 0)) || return 0
  local k
  mkdir -p "$S/fakedev"
  for ((k = 0; k < GPUS; k++)); do
    rm -f "$S/fakedev/nvidia$k"
    mknod "$S/fakedev/nvidia$k" c 1 3 || fail "mknod $S/fakedev/nvidia$k failed"
  done
  echo "NodeName=n[1-$NODES] Name=gpu File=$S/fakedev/nvidia[0-$((GPUS - 1))]" >"$S/etc/gres.conf"
}

write_slurmdbd_conf() {
  [[ "$ACCOUNTING" == 1 ]] || return 0
  (
    umask 077
    cat >"$S/etc/slurmdbd.conf" <<EOF
# written by hpc-curator tests/slurm/cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT_BASE + 1))
SlurmUser=root
DebugLevel=info
LogFile=$S/log/slurmdbd.log
PidFile=$S/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT_BASE + 2))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  )
}

# ---------------------------------------------------------------- daemons

wait_until() { # seconds command... ; polls every 0.2 s
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

start_munge() {
  chmod 0711 "$S/munge"
  head -c 1024 /dev/urandom >"$S/munge/munge.key"
  chmod 0400 "$S/munge/munge.key"
  munged --key-file="$S/munge/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$S/munge/munged.pid" --log-file="$S/log/munged.log" \
    --seed-file="$S/munge/munged.seed" --num-threads=4 --origin=127.0.0.1 \
    || fail "munged did not start"
  munge_ok() { timeout 5 munge -S "$MUNGE_SOCK" -n | timeout 5 unmunge -S "$MUNGE_SOCK"; }
  wait_until 10 munge_ok || fail "munge credential round trip failed"
}

start_mariadb() {
  mariadb-install-db --no-defaults --datadir="$S/mysql/data" --user=root \
    --auth-root-authentication-method=socket --skip-test-db >"$S/log/mariadb-install.log" 2>&1 \
    || fail "mariadb-install-db failed"
  # setsid + all fds redirected: the server must not hold the caller's pipes open
  setsid mariadbd --no-defaults --datadir="$S/mysql/data" --user=root \
    --bind-address=127.0.0.1 --port=$((PORT_BASE + 2)) --socket="$MYSQL_SOCK" \
    --pid-file="$S/mysql/mysqld.pid" --log-error="$S/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --skip-log-bin </dev/null >/dev/null 2>&1 &
  sql() { mariadb --no-defaults -S "$MYSQL_SOCK" -u root -e "$1"; }
  wait_until 30 sql 'SELECT 1' || fail "mariadb did not answer on $MYSQL_SOCK"
  sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
       GRANT ALL ON *.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;" \
    || fail "could not create the slurm database user"
}

start_slurmdbd() {
  # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
  SLURM_CONF=$CONF slurmdbd || fail "slurmdbd did not start"
  dbd_ok() { client sacctmgr -n -Q list cluster; }
  wait_until 30 dbd_ok || fail "slurmdbd did not answer"
}

start_slurm() {
  local k
  slurmctld -f "$CONF" || fail "slurmctld did not start"
  for ((k = 1; k <= NODES; k++)); do
    slurmd -f "$CONF" -N "n$k" || fail "slurmd n$k did not start"
  done
}

idle_count() {
  client sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l
}

wait_idle() {
  local deadline=$((SECONDS + START_TIMEOUT))
  while (($(idle_count) < NODES)); do
    if ((SECONDS >= deadline)); then
      client sinfo -N -l >&2 || true
      fail "only $(idle_count) of $NODES nodes idle after ${START_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

any_running() {
  local row
  while IFS= read -r row; do
    running "${row%%:*}" "${row##*:}" && return 0
  done < <(daemon_table)
  return 1
}

cmd_start() {
  set_state "$1"
  local t0=$SECONDS
  binaries_present || cmd_install
  binaries_present || { say "ERROR: Slurm binaries still missing after install"; exit 1; }
  if [[ -d "$S" ]] && any_running; then
    say "ERROR: a cluster is already running in $S; run: $0 stop $S"
    exit 1
  fi
  # a fresh cluster every time: wipe only the sub-directories this script owns
  rm -rf "$S"/{etc,log,run,ctld,spool,tmp,munge,mysql,fakedev}
  mkdir -p "$S"/{etc,log,run,ctld,munge,mysql}
  local k
  for ((k = 1; k <= NODES; k++)); do mkdir -p "$S/spool/n$k" "$S/tmp/n$k"; done
  echo "$NODES" >"$S/nodes"
  echo "$ACCOUNTING" >"$S/accounting"
  STARTING=1
  write_slurm_conf
  write_gres_conf
  write_slurmdbd_conf
  start_munge
  if [[ "$ACCOUNTING" == 1 ]]; then
    start_mariadb
    start_slurmdbd
  fi
  start_slurm
  wait_idle
  STARTING=0
  say "up in $((SECONDS - t0))s: $NODES nodes x $CPUS CPUs x $GPUS GPUs, ports from $PORT_BASE"
  echo "export SLURM_CONF=$CONF"
}

# ---------------------------------------------------------------- stop

cancel_jobs() {
  running "$S/run/slurmctld.pid" slurmctld || return 0
  # scancel needs ids or a filter; ask the controller for every job it knows
  # (plain squeue lists pending, running and completing jobs, not finished ones)
  jobs_left() { client squeue -h -o %i 2>/dev/null | sort -u; }
  local ids
  mapfile -t ids < <(jobs_left)
  ((${#ids[@]} == 0)) && return 0
  client scancel --quiet "${ids[@]}" 2>/dev/null || true
  # no job listed (none COMPLETING either) means every slurmstepd has finished
  local deadline=$((SECONDS + 30))
  while [[ -n "$(jobs_left)" ]]; do
    if ((SECONDS >= deadline)); then
      say "WARNING: jobs still listed after 30s: $(jobs_left | tr '\n' ' ')- their slurmstepd may outlive the cluster"
      return 0
    fi
    sleep 0.2
  done
}

# SIGTERM every live daemon in the list at once, wait, SIGKILL the ones left.
terminate() { # "pidfile:binary"...
  local row pid pids=() bins=() files=() i deadline
  for row in "$@"; do
    pid=$(pid_of "${row%%:*}")
    if is_ours "$pid" "${row##*:}"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); bins+=("${row##*:}"); files+=("${row%%:*}")
    fi
  done
  deadline=$((SECONDS + STOP_TIMEOUT))
  for i in "${!pids[@]}"; do
    while is_ours "${pids[$i]}" "${bins[$i]}" && ((SECONDS < deadline)); do sleep 0.1; done
    if is_ours "${pids[$i]}" "${bins[$i]}"; then
      say "${bins[$i]} (${pids[$i]}) ignored SIGTERM for ${STOP_TIMEOUT}s; SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
      local n=0
      while is_ours "${pids[$i]}" "${bins[$i]}" && ((n++ < 50)); do sleep 0.1; done
      if is_ours "${pids[$i]}" "${bins[$i]}"; then say "${bins[$i]} (${pids[$i]}) survived SIGKILL"; fi
    fi
  done
  for row in "$@"; do rm -f "${row%%:*}"; done
}

cmd_stop() {
  set_state "$1"
  [[ -d "$S" ]] || { say "no state dir $S"; return 0; }
  local t0=$SECONDS rows row slurmds=()
  cancel_jobs
  mapfile -t rows < <(daemon_table)
  for row in "${rows[@]}"; do [[ "$row" == *:slurmd ]] && slurmds+=("$row"); done
  terminate "${slurmds[@]}"
  terminate "$S/run/slurmctld.pid:slurmctld"
  terminate "$S/run/slurmdbd.pid:slurmdbd"
  terminate "$S/mysql/mysqld.pid:mariadbd"
  terminate "$S/munge/munged.pid:munged"
  say "stopped in $((SECONDS - t0))s ($S kept)"
}

# ---------------------------------------------------------------- status / env

cmd_status() {
  set_state "$1"
  local row up=0 total=0
  [[ -d "$S" ]] || { echo "no state dir $S"; return 1; }
  while IFS= read -r row; do
    total=$((total + 1))
    local f=${row%%:*} b=${row##*:}
    if running "$f" "$b"; then
      up=$((up + 1))
      echo "$(basename "$f" .pid): running (pid $(pid_of "$f"))"
    else
      echo "$(basename "$f" .pid): stopped"
    fi
  done < <(daemon_table)
  if running "$S/run/slurmctld.pid" slurmctld; then client sinfo || true; fi
  echo "$up of $total daemons running"
  ((up == total))
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  env) set_state "${2:-}" && echo "export SLURM_CONF=$CONF" ;;
  *) usage ;;
esac
