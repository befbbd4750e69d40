"""Fleet scale: a ~100 KB artifact rolled out to N simulated devices running the real agent, next to the
floor a broker allows for the same bytes.

For each fleet size, on a Mosquitto of its own, with a fresh cloud (SQLite, this process):
  fanout_floor_s         N plain asyncio MQTT clients (gmqtt, one loop, no agent) connect, subscribe and
                         read 10 retained QoS 1 chunks of 10 KB: what the broker and this machine allow
  connect_s              the simulated fleet (simulator.process_fleet: worker processes, each an AgentHost
                         of real agents on one event loop) started until every device is connected
  settle_s               then until the cloud has taken in every device's first report (the rollout starts
                         on a settled fleet, not while the cloud still works off the connects)
  rollout_s              deploy() until the cloud has recorded every device's target succeeded: each device
                         verified (signature, digest), fetched in chunks, loaded, self-tested, activated and
                         reported, and the cloud stored that report
  agents_active_s        deploy() until every agent says the version is active (its own state: the cloud may
                         still be behind); the measure of rollout_s before 2026-12-03
  deploy_s               of rollout_s, the cloud's deploy() alone: the deployment planned (a target row, a
                         signed assignment per device), committed, every desired state published
  cpu_s                  CPU seconds spent during rollout_s by the cloud (this process), the simulator's
                         workers and the broker: a figure the machine's other load hardly changes
  workers_idle_cpu_per_s the workers' CPU seconds per second while the connected fleet idles (IDLE_S before
                         deploy, polled as during the rollout): every agent's tick and the polls
  workers_ms_per_update  the workers' CPU during the rollout beyond that idle rate, per device, in ms: the
                         update's own cost, which a slower (loaded) rollout does not inflate
  workers_gc             the workers' garbage collections during rollout_s, summed ({collections: [gen0, gen1,
                         gen2], seconds: [...]}, simulator.gc_clock); their heap is frozen once the fleet has
                         settled (--no-freeze-workers: not)
  stages                 with --stages: per update state, [devices, first, median, 90th pct, last] seconds
                         from deploy() at which a device's report first said it (a subscriber of its own);
                         an intermediate state (an update's first too) the next one superseded within the
                         agent's report_hold_s never travels, so fewer devices show in those
  rollout_over_floor     rollout_s / fanout_floor_s
  cloud_bytes_per_device MQTT payload bytes the cloud published during the rollout, per device
  cloud_messages_per_device  MQTT messages the cloud published during the rollout, per device
  cloud_sent_by_kind     the same by topic kind ({kind: {bytes_per_device, messages}}: desired, art/chunk,
                         art/manifest, artifact/data, trust), and the desired states' parts (desired.manifest,
                         desired.assignment, desired.trust, desired.artifacts)
  up_per_device          what the cloud received from devices during the rollout, per device and topic kind
                         ({channel: [messages, payload bytes]}: reported, events, telemetry, samples,
                         artifact/req, presence), and `events_carried` (lifecycle events the events messages carried,
                         batched or not)
  broker_per_device      Mosquitto's own $SYS totals over the rollout, per device: PUBLISH messages and
                         bytes it sent (to devices, to the cloud's subscriptions, to the benchmark's own),
                         and every packet and byte it received (devices and cloud, PUBACKs included)
  manifest_by_digest     the cloud setting: with --compare-manifests each size runs with it off (every
                         desired state carries its manifest, as before) and then on
  cloud_gc               the cloud process's garbage collections during the rollout, per generation [count,
                         summed pause ms] (gc.callbacks), and the objects frozen (cloud.heap: this script
                         freezes the started cloud's heap as `edgefleet up` does; --no-freeze-heap leaves it)
  rss_kb_per_device      the workers' resident memory growth from imports-done to rollout-done, per device
  ingest_windows_per_s   {N: telemetry windows stored per second} with N ingestion workers (processes, each
                         an Ingestor on an MQTT 5 shared subscription, as `EDGEFLEET_SHARE_GROUP` runs them),
                         once the cloud has stopped: 8-feature windows of the fleet's devices published at
                         once (QoS 1), timed until the database holds them all

    .venv/bin/python benchmarks/fleet.py [--sizes 100,1000] [--workers 2] [--database-url postgresql://...]
                                         [--ingest-workers 1,2] [--ingest-windows 5000] [--stages]
                                         [--compare-manifests] [--profile DIR] [--no-freeze-workers]

The cloud keeps its data in SQLite unless --database-url names a PostgreSQL server (a production part:
SQLite's single writer locks up under a thousand devices); each fleet size then gets a database of its
own on that server, dropped afterwards.

Prints one JSON object last: {"records": [...]}, one record per fleet size.

Measured 2026-12-02 on the shared 2-core machine (load 3 to 20), 1,000 devices, before -> after batched
planning, batched ingestion and in-place simulated journals, runs in pairs: SQLite rollout_s 37.5 -> 6.2,
17.1 -> 9.8, 22.2 -> 9.7 (deploy_s 18.3 / 5.4 / 3.1 -> 0.8 / 1.1 / 1.1); PostgreSQL 19.3 -> 11.0 (deploy_s
7.7 -> 1.9); floor 1.0 to 1.7 s, so 3.7x to 8.2x of it. 10,000 devices (load 13 to 22) did not finish:
floor 52.7 s, workers started in 251 s, 2,061 simulated clients dropped by Mosquitto for a missed keepalive
(a worker's loop of 5,000 agents fell more than 90 s behind) and not all connected within 900 s;
deploy_s 83.9; 900 s after it 5,611 active, 4,389 idle; 103.5 KB per device.

Measured 2026-12-03 (load 5 to 10), 1,000 devices, SQLite, old -> new run back to back in pairs, new being
workers that no longer re-run this script (its cloud imports) and a 600 s keepalive: start_s 11.7 -> 5.9,
8.1 -> 5.0; rollout_s 9.9 -> 11.9, 10.4 -> 12.0 (floor 0.97 to 1.42 s, so 10x to 12x); 11.5 KB of cloud
payload per device; rss_kb_per_device 168-171 -> 183-188, the libraries the agents load on first use now
counted as theirs (before, the re-run script had loaded them before the baseline). One send() per loop turn
per connection, tried and reverted: rollout_s 22.2 and 23.8 against 21.5 and 12.2 (load 8 to 10). 10,000
devices were not measured again: at load 14 to 17 the old code's run took 4 minutes to reach its workers.
10,000 devices, new code, load 0.2 to 3.5: floor 9.1 s, start_s 11.2 (was 251), connect_s 12.8, deploy_s
18.1, no connection lost (the old run at load 14-17: 3,562); 4,094 active within 240 s and 5,906 idle: the
cloud's paho queue (4,096) had dropped their desired states at deploy, now sized to the fleet here. Run
again so (load 1 to 2): every device active, rollout_s 128.0 (13.3x the 9.6 s floor), start_s 15.0,
connect_s 13.8, deploy_s 8.4, 12.7 KB of cloud payload and 149.5 KB of worker RSS per device.

Measured 2026-12-03 later (load 6 to 30, the machine shared), 1,000 devices, SQLite, rollout_s now until the
cloud has every report. The old code at load 6-10: agents active at 12.8-16.3 s but the cloud's last report
stored at 17.5-44.6 s; its ingest thread spent 70% in a session.get per report (plus the autoflush it
caused) and most of the rest in a flush per message; the refresher's minute tick read one row per device.
Old -> new (batched target reads, one flush per batch, the refresher's one query, corked agent steps), runs
back to back at load 20-25: rollout_s 217.3 -> 52.7 (floor 5.9 / 8.5 s: 36.7x -> 6.2x), agents_active_s
113.0 -> 52.7 (the cloud no longer lags), cpu_s cloud 16.7 -> 7.1, workers 14.6 -> 9.6, broker 1.1 -> 0.9;
with the cloud changes alone (load 25-30) rollout_s 151.2, cpu_s cloud 10.5, workers 12.0. At load 9-14 the
old code: rollout_s 33.6 (floor 4.3), cpu_s cloud 9.0, workers 7.2. Cloud payload 11.5 KB per device when the
fan-out chunks arrive in time, 23-26 KB at load 20+ (devices past the 10 s fan-out deadline ask for chunks
on their own topics); rss_kb_per_device 178-191 either way.
10,000 devices were not measured after these changes: at load 20-25 the run was still settling 21 minutes
in (SQLite, 10,000 first reports each checked against label deployments by its own reconcile_device
transaction; the fan-out sweeper, ownership and refresher ticks failed on "database is locked" meanwhile).

Measured 2026-12-03 (i10speed, load 21 to 35, other helpers' 10,000-device runs beside it), 1,000 devices,
SQLite, main (old) and this branch (new) alternating, the same script: py-spy of the old rollout (--profile,
samples of a loaded machine: waits for the interpreter lock count too) put a worker's time in journal saves
18 % (3 per update, each a durability barrier; ~30 us CPU each when measured alone: mostly waiting), the
steps' socket writes 13 %, the job threads 20 % (self-test 7 %, the same vectors through the same shared
session on every device), PUBACKs sent one per received chunk 3 %, desired-state verification 3.5 %, the
benchmark's own polls 2.5 %; the cloud's in ingestion 25 % (apply_reported 5 %), paho 13 %, deploy 11.5 %.
With one self-test run per shared model and one PUBACK write per socket read: rollout_s 80.8 -> 69.8 and
63.1 -> 42.6 (floor 5.5 / 6.4 and 8.6 / 6.6 s: 14.8x -> 10.9x, 7.3x -> 6.5x), cpu_s workers 11.0 -> 9.1
and 10.1 -> 8.5 (x0.83, x0.84), cloud 7.8 -> 6.9 and 6.9 -> 6.0, broker 0.9 -> 0.9 and 0.9 -> 0.8; a third
pair at load 28-35, the polls counting rows: rollout_s 75.2 -> 81.0 (floor 6.9 / 8.7 s), workers 11.3 ->
10.9, cloud 8.0 -> 8.3, broker 1.0 -> 1.0. 11,537 cloud bytes and 182-196 KB of worker RSS per device either
way. At this load no run came near 3x of the floor; the lead's quiet figure (6.9x) was not re-measured.

Measured 2026-12-03 (i10manifest), 1,000 devices, SQLite, --compare-manifests, two runs (load 15-23, 23-35):
cloud_bytes_per_device 11,537 -> 881 (13.1x) both times, the desired state 11,418 -> 752 B (its manifest
was 10,663 B; the trust chain 304, the assignment 219, the locations 173 stay); the cloud's messages per
device 1.0 either way (+1 manifest for the fleet); Mosquitto's PUBLISHes sent per device 13.2 -> 14.2 at
the same 131.9 KB (each device still gets the manifest, as its own message); rollout_s 92.3 -> 101.9 and
92.8 -> 77.0 (not resolved at this load); cpu_s workers 9.9 -> 12.2 and 9.5 -> 13.7 (the subscribe and
unsubscribe of the manifest topic in the simulator's Python MQTT adapter), cloud 6.4 -> 8.4 and 6.6 -> 8.5
(this process ran the "inside" arm first both times).

Measured 2026-12-03 afternoon (load 15 to 40, the machine shared by several fleet runs), 10,000 devices,
SQLite. The old code (load 15-22): floor 12.3 s, start_s 83.6, settle_s 56.2, deploy_s 63.7; not every
device counted connected within 300 s and the rollout not done within 300 s (1,860 active at 364 s, cpu_s
cloud 48.3 / workers 81.1 / broker 14.0, 55.5 KB of cloud payload per device: most devices past the fan-out
deadline asked for chunks on their own topics); sampled 60 s with py-spy around the end of settle, half the
ingest thread's busy samples were the per-device reconcile (plan_for_new_device, its commit and its wait for
a SQLite write turn, 364 of 734), and this script's own settle poll (every device id read every 0.2 s, in a
write transaction) took 412 samples of the cloud process's interpreter. New (one reconcile per ingestion
batch, a single read-only query when no label deployment is open; the polls count in the database; the fleet
enrolled 500 per transaction): sampled 30 s during settle at load 30-37, the ingest thread waited for
messages 332 samples and worked about 300, with no reconcile left in it: settle is now bound by how fast the
simulated agents send their first reports, not by the cloud. The new run's record was lost (this run's own
1,500 s cap ended it as it deployed: enrolling 10,000 devices took ~20 minutes at load 30); PostgreSQL
10,000 was started and stopped unfinished for the same reason. The lead's quiet baseline for PostgreSQL
10,000 on the old code: settle_s 22.1, rollout_s 108.6 (floor 11.1).
1,000 devices, SQLite, old and new run at the same time (load 20-40): settle_s 20.19 -> 2.94 (6.9x less),
rollout_s 84.5 -> 83.2 (floors 33.2 / 24.0 s: the loaded machine, not the cloud, set the pace), cpu_s cloud
11.8 -> 10.9, workers 15.0 -> 14.3, broker 1.3 -> 1.3; 11.5 KB of cloud payload and 186-188 KB RSS per device.

Measured 2026-12-03 by the lead on a quiet machine (load 0.4-3), the morning's main (251da18) against the
afternoon's (all of the above merged). 10,000 devices, PostgreSQL: rollout_s 108.6 -> 117.3 (floor 11.1 / 14.0:
9.8x -> 8.4x), settle_s 22.1 -> 0.24, agents_active_s 103.1 -> 97.9 (the cloud recorded the last report 5.5 ->
19 s after the agents said active), cpu_s cloud 69.1 -> 80.6, workers 97.3 -> 99.9, broker 15.1 -> 12.4, cloud
bytes per device 12,397 -> 767, RSS per device 150 -> 160 KB. 1,000 devices, SQLite, alternating old/new/old/new
(load 2): rollout_s 8.62 / 11.48 old, 8.97 / 11.22 new (5.9x / 8.0x and 7.9x / 7.4x the floor), cloud bytes
11,542 -> 881: smaller desired states, not yet a faster rollout.

Measured 2026-12-03 (i10cloud, load 15 to 24, other helpers' runs beside it), 1,000 devices, SQLite, main
(old) and the branch (new) started together in pairs: the cloud's paho client reading many packets per recv
with one PUBACK write per read (cloud.mqtt.bulk_client), then validation decided once per field, a batch's
device rows read and written as plain values, and ingestion batches lingering up to 20 ms. Bulk client
alone: cpu_s cloud 8.1 -> 6.8, rollout_s 95.1 -> 57.5 (floors 6.8 / 13.7). All but the linger: cloud
9.1 -> 8.1, rollout_s 118.8 -> 117.1. All: cloud 8.3 -> 6.6 (x0.80), rollout_s 129.2 -> 116.0, floor 6.9 /
7.4; again at load 7-15: cloud 7.4 -> 6.4, rollout_s 34.6 -> 32.7, deploy_s 7.1 -> 3.8 (floors 2.2 / 1.9).
Workers 9.1-12.0 either way. The cloud's lag behind the agents (rollout_s - agents_active_s: the last
report waiting in the ingestion queue) was 4.9, 16.0, 15.6 and 3.3 s for main, 3.8, 0.0, 0.5 and 0.2 s for
the branch: main's single ingest thread plus paho's per-packet loop could not keep up with 1,000 devices'
reports on a loaded machine, which is the same backlog as the 10,000-device record lag above. One
10,000-device PostgreSQL run of the branch (load 2-10, other helpers' runs beside it; main not run beside
it) did not settle the 10,000-device question: floor 15.8 s, rollout_s 223.0, agents_active_s 182.1 (41 s of
lag), cpu_s cloud 85.2 / workers 124.6 / broker 14.4, but 58,191 cloud bytes per device (767 on the lead's
quiet run): most devices missed the fan-out deadline and fetched their chunks from the cloud one by one, so
the cloud's time went to serving chunks; it needs a quiet machine and main beside it. py-spy of the
branch's cloud (idle samples included): paho's loop 24.7 % of samples (10 % of them waiting in select),
ingestion 36 %, deploy 11 %; main's ingestion was 42 % and paho's loop 45 % of busy samples.

Measured 2026-12-03 (i10cloud3: the cloud's CPU per device in a rollout), main (656a7ca, old) and the branch
(new) alternating, one run at a time, other helpers' runs beside them (load 1.3 to 7). py-spy of main at 1,000
(SQLite): deploy()'s planning half ORM objects (AssignmentRecord 15, DeploymentTarget 7 and Device 7 of 47
samples); the ingest thread's ORM flush of the targets 34 and their reads 15 of 303, the roll-up's DISTINCT
over every target 15. New: deploy's targets and assignment records written as plain rows (insert_ignore, one
executemany UPDATE), the devices' capabilities read as values; ingestion's targets read and written as
values (rollout.write_targets); the roll-up probes for one unfinished target (LIMIT 1) before any DISTINCT;
this script freezes the started cloud's heap as `edgefleet up` does. 1,000 devices, SQLite, new / old /
new / old, first before the roll-up probe, then with it (load 1.3-2.9): cpu_s cloud 1.0 / 1.3 / 1.0 / 1.1 and
1.0 / 1.2 / 0.9 / 1.3 (x0.80), deploy_s 0.17 / 0.46 / 0.17 / 0.36 and 0.14 / 0.36 / 0.13 / 0.41 (x0.38),
rollout_s 2.98 / 3.33 / 2.42 / 2.35 and 2.25 / 2.39 / 2.08 / 3.66 against floors of 0.47-0.68 s (3.1x-7.8x:
the workers, 2.4-2.8 CPU-s, set the pace), the cloud's lag (rollout_s - agents_active_s) 0.0-0.1 s either
way. 3,000 devices, PostgreSQL, new / old, two pairs before the roll-up probe and two with it (load 1.7-7.1):
cpu_s cloud 3.7 / 4.4, 3.6 / 4.2, 4.6 / 5.4, 3.8 / 4.5 (x0.84), deploy_s 0.58 / 1.45, 0.81 / 1.08, 0.69 /
2.23, 0.87 / 1.30 (x0.49), rollout_s 12.21 / 12.30, 10.44 / 8.46, 16.88 / 22.95, 11.25 / 12.38 (floors
1.35-1.66 s; 6.8x-14.4x, the load's), lag 0.0-0.33 s either way. py-spy of the new
cloud at 3,000 (PostgreSQL, 200 Hz): deploy's planning is now signing (38 of 59 samples); ingestion's samples
are mostly waits on the server's round trips (about a dozen per batch: the pool's pre-ping, credentials,
device rows, targets, two executemany pipelines, the roll-up, the inserts, commit); this script's polls were 87
of the cloud's 1,828. Garbage collection (cloud_gc) costs little: 1,000 devices ~12 ms of pauses either way
(no full collection); 3,000 on PostgreSQL 3 full collections of 10-17 ms each with the heap frozen, one of 142
ms without (--no-freeze-heap), plus ~65-105 ms of young collections. Publishing deploy's desired states in
committed batches was not tried: deploy_s is now 0.13-0.17 s of a 2-3 s rollout at 1,000, and a failure
between batches would leave a deployment half targeted with half its desired states already out.
10,000 devices on PostgreSQL, the new code alone (one run, load 1.0-3.1; main not run beside it; the lead's
quiet figures of the same morning's main in brackets): rollout_s 32.2 (47.9) against a floor of 4.84 s (6.65x;
8.1x), agents active at 31.1 s and the cloud's last record 1.1 s later (5.2), deploy_s 1.74 (5.3), cpu_s cloud
13.7 (21.9) / workers 33.7 / broker 6.8, 4.0 reports + 3.8 event messages per device, 55,250 windows/s by one
ingestion worker; its collections 2,142 young (238 ms), 194 middle (132 ms) and 18 full (363 ms) with the
started heap frozen: 0.73 s of the cloud's 13.7 CPU-s. Raising the young threshold 700 -> 7,000 (tried at
3,000 on PostgreSQL only: 23 young and 2 middle collections, no full one, 118 ms against 101-155 ms) did not
pay there and was left out. Nor did a larger in-flight window for the cloud's QoS 1 publishes (paho's default
20; 1,000 tried, 1,000 devices, SQLite, --stages, three pairs): the last device's first report came 1.28-2.14
s after deploy() with 20 and 1.34-1.80 s with 1,000, rollout_s 2.15-3.54 either way; the workers pace it.

Measured 2026-12-03 (i10agent: the simulated agents' CPU per update), 1,000 devices, SQLite, main (7da9918,
old) and this branch (new) alternating, one run at a time; the levers: the journal by json's C encoder and
not rewritten when unchanged, the manifest parsed once per InstalledModel, a telemetry window's bins built
once per manifest, the jobs as loop callbacks (no thread pool), one signature check per distinct signed
bytes per process, the store's file I/O by os calls, the unsynced journal truncated only when it shrinks.
cpu_s workers at load 15-28 (rollouts of 29-94 s; each second also costs the idle fleet ~0.05 s):
old 10.3 / 11.6 / 9.7 / 9.2 (rollout_s 75.5 / 80.4 / 55.5 / 29.1), new 7.4 / 8.1 (52.4 / 75.6), 9.1 with py-spy
running (94.3). With workers_ms_per_update (the idle rate taken out), load 1-10, in run order: old 6.79 ms
(cpu_s workers 7.4, rollout_s 11.94, floor 2.05 s), new 5.11 (6.1, 17.79, floor 2.98), new with --state-root
/dev/shm 5.25 (6.0, 13.01, floor 2.46), new 5.10 (5.8, 12.78, floor 1.78: 7.2x), old 6.54 (7.5, 19.83, floor
1.84), new with --job-threads 2 6.03 (6.8, 15.05, floor 3.41); idle 0.049-0.059 s per second in every run.
So -23% per update, not the -50% aimed at; the jobs on the loop are 0.9 ms of it, the other levers 0.5 ms.
rss_kb_per_device: old 208.6 / 210.1, new 232.8 / 229.3 / 235.5, new with the job pool 210.9: the loop
thread's heap kept the freed ~100 KB artifact buffers; with the workers mmapping allocations from 64 KiB
(simulator.process_fleet._mmap_large_buffers) 206.7, at 5.09 ms per update (rollout_s 12.32, floor 1.26).
py-spy of the new workers (load 19-27): socket writes 15 % (one send per step that
publishes: fewer reports and events is i10msgs' work), the store's syscalls ~20 % (journal writes, begin and
commit: on a loaded ext4 they wait on the filesystem journal; on tmpfs, one run, the CPU was the same), ticks 8 %, this
script's polls of every agent's state 4-7 %. The signature cache holds at most 4,096 entries (~1.6 MB per
worker at most).

Measured 2026-12-03 (i10idle3: the idle fleet and the writes per update), 1,000 devices, SQLite, this branch
(new) and main (464ae83, old) alternating, new / old / new / old, load 9-18 (other helpers' runs, and this
branch's tests during the first old run): workers_idle_cpu_per_s 0.005 / 0.026 / 0.005 / 0.028 (x0.19: an idle
agent is stepped when its timers are due, not every second, and the polls no longer copy every agent's
reported state); workers_ms_per_update 3.55 / 3.99 / 2.95 / 4.09 (x0.81: a read's PUBACKs leave in the write
of the steps it queued, 5 socket writes per device and update instead of 7); cpu_s workers 3.6 / 4.9 / 3.0 /
4.6, cloud 2.3 / 3.1 / 1.9 / 2.7; rollout_s 11.05 / 35.78 / 6.91 / 18.00 against floors of 3.64 / 3.64 /
7.44 / 1.53 s (the loaded machine's floor moves more than the rollouts: 3.0x, 9.8x, 0.9x, 11.8x).
py-spy of the new workers during a rollout (load 12-15): socket writes 15 % (before the PUBACK change),
the store's file calls ~23 % (journal saves 12 %: 3 per update, each a state a crash resumes from; the
download's begin 6 %), the manifest's handling 18 % inclusive; no tick left among the top items.
10,000 devices, PostgreSQL, the new code alone (load 5 at its start, 10-19 during it): workers_idle_cpu_per_s
0.038 (0.40-0.52 before), cpu_s workers 75.2 / cloud 77.4 / broker 14.0 over a 481.3 s rollout (floor 26.4 s),
workers_ms_per_update 5.68, agents_active_s 363.7; the cloud's paho link was lost twice and most devices
fetched their chunks one by one past the fan-out deadline (242 KB of cloud payload per device): the
machine's load, not a figure to set against the quiet runs.

Measured 2026-12-03 (i10hold: an update's first state held like the others, its events sent with the
terminal report), 1,000 devices, SQLite, main (656a7ca, old) and this branch (new) alternating, old first,
four pairs at load 1.0-3.8: up_per_device reported + events 2.46 + 2.46 / 2.01 + 2.01 / 2.03 + 2.03 /
2.03 + 2.03 -> 1.04 + 1.00 / 1.38 + 1.00 / 1.76 + 1.00 / 1.00 + 1.00 (5.0 events carried either way; a
report above one is an update that outlasted report_hold_s on a worker's loop and sent one intermediate
state); cpu_s cloud 1.5 / 1.4 / 1.5 / 1.6 -> 0.9 / 1.0 / 1.1 / 0.8, workers 2.5 / 2.6 / 2.9 / 2.9 -> 2.2 /
2.6 / 2.9 / 2.3, broker 0.2-0.3 either way; workers_ms_per_update 2.47 / 2.58 / 2.84 / 2.93 -> 2.20 / 2.61 /
2.90 / 2.25; rollout_s 3.79 / 2.51 / 2.85 / 2.70 -> 1.95 / 2.27 / 2.58 / 1.97 against floors of 0.46-1.01 s
(3.8x / 5.0x / 6.1x / 5.3x -> 4.2x / 4.9x / 5.6x / 4.0x); broker_per_device publish/messages/sent 11.4 /
10.0 / 10.1 / 10.1 -> 7.1 / 7.8 / 8.5 / 7.0 (each upward message goes to the cloud and to --stages' own
subscriber), messages/received 44.8-45.0 -> 39.7-40.9 in pairs 2 and 4 (the $SYS snapshots of runs this
short are unreliable: 21.3 in old 1, 0.0 in new 3). No other upward channel shows in up_per_device.
100 devices, four pairs at load 2.3-4.0: up_per_device 2.0 + 2.0 -> 1.0 + 1.0 every time, broker
messages/received 44.7 -> 39.7-40.2, rollout_s 0.36 / 0.49 / 0.82 / 0.36 -> 0.46 / 0.59 / 0.47 / 0.37
(floor 0.04-0.05 s; cpu_s too small to compare).

Measured 2026-12-03 (i10worker: the simulated devices' CPU per update), main (656a7ca, old) and this branch
(new) alternating, one run at a time, 2 workers. The levers: each worker's heap frozen once its agents are
started and again once the fleet has settled (gc.freeze: the agents live as long as the worker), gmqtt's
packets parsed as each socket read arrives (simulator.direct_read: no StreamReader copy in and out, no read
task woken per read; a 3.1.1 PUBLISH taken apart with one copy of its payload, not three struct.unpack
copies), and the journal's models encoded to JSON once per signed manifest and spliced into each save (the
save itself, a crash point, unchanged: 49 -> 13 us an encode of an updating device's 30 KB journal).
The collector (workers_gc, gc.callbacks in the workers), new code with --no-freeze-workers -> frozen: 3,000
devices 1.11 s of the rollout's 8.9 s of worker CPU (12 %; two full collections of 0.24 s each) -> 0.51 s; 5,000
devices (load 2-3) 1.51 s (gen2 0.94 s: 3 collections) -> 0.56 s (gen2 0.12 s). At 1,000 devices it was
0.1 s (no full collection within a rollout): the collector is why more devices a worker cost more per update.
workers_ms_per_update, old -> new in pairs: 1,000 devices (SQLite, load 2-8) 2.33 -> 2.52 and 2.78 -> 2.30,
earlier that hour without the lean PUBLISH 2.60 -> 2.65 and 3.13 -> 2.66: within the noise at this size;
3,000 devices (SQLite, load 0.7-3.8) 2.78 -> 2.47 and 3.01 -> 2.65 (-11 %), rollout_s 11.16 -> 9.55 and
12.76 -> 7.52 (floors 1.43-1.64 s), rss_kb_per_device 175-179 -> 165-169; 10,000 devices (PostgreSQL), new
at load 1-2 and old at 2-2.5, then new first at load 3-3.5: 3.61 -> 2.67 (-26 %) and 3.10 -> 2.61 (-16 %),
cpu_s workers 37.7 -> 27.7 and 32.3 -> 27.2, cloud 16.3 -> 15.7 and 16.2 -> 18.5, broker 7.0 -> 5.8 and 6.7
-> 4.5, rollout_s 49.33 -> 30.88 (floors 6.71 / 6.64 s: 7.35x -> 4.65x) and 40.07 -> 39.83 (floors 5.04 /
4.77 s: 7.95x -> 8.35x; the cloud's 18.5 s of CPU set that pace), start_s 13.2 -> 6.9 and 10.6 -> 6.5, 780 B
of cloud payload per device every time (no device missed the fan-out). So at 10,000 an update now costs a
worker about what it costs at 1,000 (2.6-2.7 against 2.3-2.7 ms), not the 1.5 ms aimed at. Still, with the
heap frozen, the 10,000-device runs' younger generations' collections took 1.56 and 2.12 s (gen1 7-10 ms
each) and the full ones 0.61 and 0.82 s: 8-11 % of the workers' rollout CPU, not looked into further.
py-spy of the new workers at 3,000 devices (400 Hz, load 3): socket writes 12.5 %
(the corked steps' sends), the socket reads 4 %, desired-state signature checks 5 % (each device's own
assignment), the store's file calls ~12 % (begin_download 4 %, reading the download back to verify 2.3 %,
chunk writes 2.5 %, journal writes 2 %), the journal's json 9 % before the splice; what is left is spread over
the agent's steps (no other single item above 2 %).
Measured 2026-12-03 (lead: update slots, simulator.update_slots), 10,000 devices, PostgreSQL, side by side
in one run (--update-slots 100,0; load 1-3, helpers' runs beside it): without slots every device's update
advanced in lockstep over the whole rollout (reports of downloading median 13.2 s, active 26.0 s after
deploy) and sent 4.16 reports + 1.97 events messages; with 100 slots per worker, 1.02 + 1.00. cpu_s cloud
13.0 -> 8.8, broker 6.8 -> 2.2, workers 31.9 -> 30.7; rollout_s 29.96 -> 32.79 (floors 5.42 / 5.08): the
CPU saved, the wall time not, because per-process CPU showed the machine not saturated (1.3 of 2 cores).
After i10worker's and i10cloud3's merges (quiet machine, load ~1, one run, --update-slots 100,400):
rollout_s 19.01 / 19.80 against floors 4.75 / 4.58 (4.0x / 4.3x), cpu_s cloud 7.6 / 7.7, workers 22.6 /
23.9 (2.20 / 2.32 ms per update), broker 2.1 / 2.4, 1.0 report + 1.0 events message per device (1.13 with
400); sampled each second, the workers ran at 65-78 % of a core each, the cloud 30 %, PostgreSQL 13 %,
Mosquitto 13 %: the 2 cores saturated. 1,000 devices, SQLite (load 1.5-2.6, i10worker's runs beside it),
100 / 0 / 100 / 0 in one run: rollout_s 2.77 / 3.09 / 2.26 / 1.83 (floors 0.39-0.44), reports per device
1.0 / 2.0 / 1.0 / 1.02; with 5 slots 6.57 s: ~65 ms per update from hand-over to active when the loop is idle.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the private Mosquitto the tests use (tests/support/mosquitto.py)

from fanout_floor import fan_out  # noqa: E402  (benchmarks/, the script's own folder)
from sqlmodel import Session, col, func, select  # noqa: E402
from support.mosquitto import MosquittoBroker  # noqa: E402

from cloud import registry  # noqa: E402
from cloud.db import TargetStatus, make_engine, read_only  # noqa: E402
from cloud.db.tables import DeploymentCreate, DeploymentTarget, Device, TelemetryRecord  # noqa: E402
from cloud.heap import freeze_startup_heap  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.service import CloudService  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.training.pipeline import PipelineResult, TrainingConfig, run_training_pipeline  # noqa: E402
from edge_agent.paho_transport import PahoTransport  # noqa: E402
from protocols.topics import Channel, device_topic  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402
from simulator.host import DeviceSpec  # noqa: E402
from simulator.process_fleet import ProcessFleet, cpu_s  # noqa: E402
from simulator.update_slots import UPDATE_SLOTS  # noqa: E402

MODEL_ID = "fleet-bench"
# 5,000 agents on one loop send their pings late together when it falls behind (no real device would):
# at 60 s, Mosquitto dropped 2,061 of 10,000 for it (1.5 x keepalive without a packet)
SIMULATED_KEEPALIVE_S = 600
IDLE_S = 10.0  # the idle fleet's CPU is measured this long before deploy
# an MLP whose INT8 ONNX artifact is about 100 KB (64 inputs x 1,500 hidden + 1,500 x 10 weights)
MODEL = TrainingConfig(model_id=MODEL_ID, estimator="mlp", params={"hidden_layer_sizes": (1500,), "max_iter": 60})


def fanout_floor(url: str, clients: int, timeout_s: float) -> float | None:
    """Seconds until `clients` fresh gmqtt clients have each read every retained chunk; None on timeout."""
    return fan_out(url, url, clients, timeout_s, "floor")


def wait_for(count: Any, target: int, timeout_s: float, poll_s: float = 0.2) -> float | None:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if count() >= target:
            return time.perf_counter() - start
        time.sleep(poll_s)
    return None


def _await_rollout(active: Any, succeeded: Any, size: int, timeout_s: float) -> tuple[float | None, float | None]:
    """(when every agent said active, when the cloud had recorded every target succeeded), perf_counter times,
    None for what did not happen within timeout_s. The cloud's count (one query) is read every 0.1 s, the
    agents' (every worker reads every agent's state) every 0.5 s: a poll twice a second set rollout_s's
    granularity while it waited for the agents first (up to 0.5 s on a 1.5 s target at 1,000 devices)."""
    start, active_at, seen_at, polls = time.perf_counter(), None, None, 0
    while seen_at is None and time.perf_counter() - start < timeout_s:
        if active_at is None and polls % 5 == 0 and active() >= size:
            active_at = time.perf_counter()
        if succeeded() >= size:
            seen_at = time.perf_counter()
        polls += 1
        if seen_at is None:
            time.sleep(0.1)
    if seen_at is not None and active_at is None:  # every target succeeded: every agent had said active by then
        active_at = seen_at if active() >= size else None
    return active_at, seen_at


@contextlib.contextmanager
def fresh_database(server_url: str | None, name: str) -> Any:
    """A new, empty PostgreSQL database on server_url (yields its URL), dropped afterwards; None: SQLite."""
    if server_url is None:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server_url.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _ingest_worker(database_url: str, mqtt_url: str, fleet: str, group: str, ready: Any, stop: Any) -> None:
    """One ingestion worker process: an Ingestor fed by a router on the share group, as a cloud worker."""
    from cloud.monitoring import Ingestor
    from cloud.mqtt.bulk_client import CloudTransport
    from cloud.mqtt.router import MessageRouter
    engine = make_engine(database_url)
    ingestor = Ingestor(engine, fleet=fleet)
    router = MessageRouter(ingestor.submit, lambda _t, _p: None, fleet=fleet, share_group=group)
    transport = CloudTransport(mqtt_url, f"bench-ingest-{os.getpid()}", protocol="5", max_queued=100_000)
    router.attach(transport)
    ingestor.start()
    transport.start()
    if transport.wait_connected(30):
        ready.set()
    stop.wait(3600)
    transport.stop()
    ingestor.stop(30)
    engine.dispose()


def _windows(device_ids: list[str], fleet: str, first_seq: int, count: int) -> list[tuple[str, bytes]]:
    now = int(time.time() * 1000)
    out = []
    for n in range(count):
        device_id, seq = device_ids[n % len(device_ids)], first_seq + n
        window = pb.TelemetryWindow(
            schema_version=1, device_id=device_id, seq=seq, window_start_ms=now - 60_000, window_end_ms=now,
            inference_count=100, model=pb.ModelRef(model_id=MODEL_ID, version="1", sequence=1),
            latency_p50_us=120.0, latency_p95_us=300.0,
            latency_us=pb.Histogram(bounds=[100, 200, 400, 800], counts=[40, 40, 15, 5, 0]),
            features=[pb.FeatureSketch(index=i, counts=[10, 20, 40, 20, 10]) for i in range(8)],
            predictions=pb.PredictionProfile(labels=["a", "b", "c"], counts=[30, 30, 40]),
        )  # fmt: skip
        out.append((device_topic(device_id, Channel.TELEMETRY, fleet=fleet), window.SerializeToString()))
    return out


def ingest_rate(
    database_url: str, mqtt_url: str, fleet: str, device_ids: list[str], workers: int, windows: int, first_seq: int,
    timeout_s: float,
) -> float | None:  # fmt: skip
    """Telemetry windows stored per second by `workers` ingestion processes; None on timeout."""
    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in range(workers)]
    stop = context.Event()
    group = f"bench{time.monotonic_ns()}"
    processes = [context.Process(target=_ingest_worker, args=(database_url, mqtt_url, fleet, group, r, stop),
                                 daemon=True) for r in ready]  # fmt: skip
    for process in processes:
        process.start()
    engine = make_engine(database_url)
    messages = _windows(device_ids, fleet, first_seq, windows)
    publisher = PahoTransport(mqtt_url, f"bench-telemetry-{group}", protocol="5", max_queued=windows + 10)

    def stored() -> int:
        with Session(engine) as session:
            return len(session.exec(select(TelemetryRecord.id).where(TelemetryRecord.seq >= first_seq)).all())

    try:
        if not all(r.wait(60) for r in ready):
            return None
        publisher.start()
        if not publisher.wait_connected(30):
            return None
        time.sleep(1.0)  # the workers' subscriptions are in place (SUBACK follows the connect)
        start = time.perf_counter()
        for topic, payload in messages:  # queued at once; paho sends them as the broker acknowledges
            publisher.publish(topic, payload, qos=1)
        done = wait_for(stored, windows, timeout_s, poll_s=0.1)
        return None if done is None else round(windows / (time.perf_counter() - start))
    finally:
        publisher.stop()
        stop.set()
        for process in processes:
            process.join(60)
            if process.is_alive():
                process.kill()
        engine.dispose()


# counted by the database: the polls run in the cloud's process, and reading 10,000 ids every 0.2 s took the
# interpreter lock from the cloud's threads (a sixth of the process's samples while a 10,000-device fleet settled)
def succeeded(engine: Any, deployment_id: str) -> int:
    """Targets of the deployment the cloud has recorded as succeeded (the device reported the model active)."""
    with Session(read_only(engine)) as session:
        return session.exec(select(func.count()).select_from(DeploymentTarget).where(
            DeploymentTarget.deployment_id == deployment_id,
            DeploymentTarget.status == TargetStatus.SUCCEEDED)).one()  # fmt: skip


def reported(engine: Any) -> int:
    """Devices whose first report the cloud has stored."""
    with Session(read_only(engine)) as session:
        return session.exec(select(func.count()).select_from(Device).where(col(Device.reported_ts_ms) > 0)).one()


class CountingMosquitto(MosquittoBroker):
    """Mosquitto publishing its $SYS counters every second (default: every 10 s)."""

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_path.open("a") as conf:
            conf.write("sys_interval 1\n")


class BrokerCounters:
    """Mosquitto's own totals, read from $SYS: PUBLISH packets and their bytes it sent to every client
    (devices and cloud alike), and every packet and byte it received (PUBLISH, PUBACK, SUBSCRIBE, PINGREQ:
    Mosquitto 2.0.11 leaves `publish/messages/received` at 0)."""

    TOPICS = ("publish/messages/sent", "publish/bytes/sent", "messages/received", "bytes/received")

    def __init__(self, url: str) -> None:
        self.values: dict[str, int] = {}
        self._transport = PahoTransport(url, f"bench-sys-{os.getpid()}", protocol="3.1.1", max_queued=1000)
        self._transport.set_message_handler(self._on_message)
        for name in self.TOPICS:
            self._transport.subscribe(f"$SYS/broker/{name}", 0)

    def __enter__(self) -> BrokerCounters:
        self._transport.start()
        self._transport.wait_connected(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._transport.stop()

    def _on_message(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(ValueError):
            self.values[topic.removeprefix("$SYS/broker/")] = int(payload)

    def snapshot(self, wait_s: float = 2.5) -> dict[str, int]:
        """The counters once the broker has published them again (every second), so they include now."""
        self.values = {}
        wait_for(lambda: len(self.values), len(self.TOPICS), wait_s, poll_s=0.1)
        time.sleep(1.1)  # a full interval later: what was sent just before the call is counted
        return dict(self.values)


class StageClock:
    """When each device's reports first said each update state, in seconds from `begin()`: a subscriber of
    its own on every device's reported topic (--stages only: it costs the benchmark process a little)."""

    def __init__(self, url: str, fleet: str) -> None:
        self.first: dict[str, dict[str, float]] = {}
        self._start = time.perf_counter()
        self._transport = PahoTransport(url, f"bench-stages-{os.getpid()}", protocol="3.1.1", max_queued=1000)
        self._transport.set_message_handler(self._on_message)
        self._transport.subscribe(f"ef/v1/{fleet}/dev/+/{Channel.REPORTED.value}", 1)

    def __enter__(self) -> StageClock:
        self._transport.start()
        self._transport.wait_connected(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._transport.stop()

    def begin(self) -> None:
        self._start, self.first = time.perf_counter(), {}

    def _on_message(self, topic: str, payload: bytes) -> None:
        at = time.perf_counter() - self._start
        state = pb.UpdateState.Name(pb.ReportedState.FromString(payload).update_state).removeprefix("UPDATE_STATE_")
        self.first.setdefault(state.lower(), {}).setdefault(topic, at)

    def summary(self) -> dict[str, list[float]]:
        """Per state: [devices, first, median, 90th percentile, last] seconds."""
        out = {}
        for state, times in self.first.items():
            t = sorted(times.values())
            out[state] = [len(t), *(round(t[min(len(t) - 1, int(q * len(t)))], 2) for q in (0, 0.5, 0.9)),
                          round(t[-1], 2)]  # fmt: skip
        return out


def measure(
    size: int, workers: int, timeout_s: float, workdir: Path, database_url: str | None,
    ingest_workers: Sequence[int] = (), ingest_windows: int = 5000, stages: bool = False,
    profile: Path | None = None, manifest_by_digest: bool = True, state_root: Path | None = None,
    job_threads: int = 0, freeze_heap: bool = True, profile_rate: int = 100, freeze_workers: bool = True,
    update_slots: int = UPDATE_SLOTS,
) -> dict[str, Any]:  # fmt: skip
    record: dict[str, Any] = {"devices": size, "workers": workers, "manifest_by_digest": manifest_by_digest,
                              "database": "postgresql" if database_url else "sqlite"}  # fmt: skip
    if state_root is not None:
        record["state_root"] = str(state_root.parent)
    if job_threads:
        record["job_threads"] = job_threads
    if not freeze_workers:
        record["freeze_workers"] = False
    record["update_slots"] = update_slots
    with CountingMosquitto(workdir / "mosquitto") as broker, BrokerCounters(broker.url) as counters, \
            fresh_database(database_url, f"edgefleet_fleet_{size}_{os.getpid()}") as db_url:  # fmt: skip
        record["fanout_floor_s"] = _round(fanout_floor(broker.url, size, timeout_s))
        # deploy() publishes a desired state per device at once: paho's default 4,096 queued dropped 5,906
        # of 10,000 ("outgoing queue full"); the cloud's own limit is not what this measures
        settings = CloudSettings(data_dir=workdir / "cloud", api_port=0, mqtt_url=broker.url,
                                 mqtt_max_queued=max(4096, 2 * size + 1000), manifest_by_digest=manifest_by_digest,
                                 **({"database_url": db_url} if db_url else {}))  # fmt: skip
        with CloudService(settings) as cloud:
            assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
            model: PipelineResult = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, MODEL)
            with Session(cloud.engine) as session:
                version = registry.get_model_version(session, MODEL_ID, model.version)
                assert version.id is not None
                record["artifact_bytes"] = {a.format: a.size_bytes for a in registry.artifacts_of(session, version.id)}
            ids = [f"fleet-{size}-{n:05d}" for n in range(size)]
            if freeze_heap:
                freeze_startup_heap()  # as `edgefleet up` does once its cloud has started (cloud.heap)
            specs = []
            # committed in slices: enrolling 10,000 devices in one transaction held SQLite's write lock past
            # the 30 s the cloud's periodic ticks wait for it (they failed)
            for first in range(0, size, 500):
                with Session(cloud.engine) as session:
                    specs += [DeviceSpec(d, password=enroll_device(session, d).password) for d in ids[first:][:500]]
                    session.commit()
            sent = _count_cloud_bytes(cloud)
            received = _count_cloud_received(cloud)
            fleet = ProcessFleet(specs, workers=workers, mqtt_url=broker.url, mqtt_protocol="3.1.1",
                                 trust_path=cloud.trust_chain_path, state_root=state_root or workdir / "devices",
                                 keepalive_s=SIMULATED_KEEPALIVE_S, job_threads=job_threads,
                                 freeze_heap=freeze_workers, update_slots=update_slots)  # fmt: skip
            started = time.perf_counter()
            clock = StageClock(broker.url, cloud.deployer.fleet) if stages else contextlib.nullcontext()
            with fleet, clock:
                record["start_s"] = round(time.perf_counter() - started, 2)
                record["connect_s"] = _round(wait_for(fleet.connected, size, timeout_s))
                # a settled fleet: the cloud has taken in every device's first report (each checked against
                # label deployments), so the rollout is not timed while it still works off the connects
                settled = time.perf_counter()
                assert cloud.ingestor is not None
                if wait_for(lambda: reported(cloud.engine), size, timeout_s) is not None:
                    cloud.ingestor.drain(timeout_s)
                record["settle_s"] = round(time.perf_counter() - settled, 2)
                if freeze_workers:
                    fleet.freeze_heap()  # the connected fleet lives until the end: no collection walks it again
                sent[0] = sent[1] = 0
                _SENT_BY_KIND.clear()
                received.clear()
                print(f"{size} devices connected; deploying", file=sys.stderr, flush=True)
                # the workers' CPU while the fleet idles (each agent's tick, the polls below): what a rollout
                # costs them besides the updates, in proportion to how long it takes
                idle_cpu, idle_from = fleet.cpu_s(), time.perf_counter()
                while time.perf_counter() - idle_from < IDLE_S:
                    fleet.running(model.version)
                    time.sleep(0.5)
                idle_rate = (fleet.cpu_s() - idle_cpu) / (time.perf_counter() - idle_from)
                record["workers_idle_cpu_per_s"] = round(idle_rate, 3)
                on_wire = counters.snapshot()
                cpu = (cpu_s(), fleet.cpu_s(), broker.cpu_s())
                gc_before = fleet.gc_stats()
                cpu_from = time.perf_counter()
                pauses = GcPauses().start()
                pids = {"cloud": os.getpid(), **fleet.worker_pids()}
                spies = _profile(profile, pids, profile_rate) if profile else []
                if isinstance(clock, StageClock):
                    clock.begin()  # the stages count from deploy(), as rollout_s does (not from the idle period)
                start = time.perf_counter()
                deployment = cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=model.version,
                                                                    device_ids=ids))  # fmt: skip
                record["deploy_s"] = round(time.perf_counter() - start, 2)
                agents_active = lambda: fleet.running(model.version)  # noqa: E731
                cloud_succeeded = lambda: succeeded(cloud.engine, deployment.id)  # noqa: E731
                active_at, seen_at = _await_rollout(agents_active, cloud_succeeded, size, timeout_s)
                done = active_at
                record["agents_active_s"] = None if active_at is None else round(active_at - start, 2)
                record["rollout_s"] = None if seen_at is None else round(seen_at - start, 2)
                _stop_profile(spies)
                record["cloud_gc"] = pauses.stop()
                used = [now - before for now, before in zip((cpu_s(), fleet.cpu_s(), broker.cpu_s()), cpu, strict=True)]
                cpu_for_s = time.perf_counter() - cpu_from
                record["cpu_s"] = dict(zip(("cloud", "workers", "broker"), (round(u, 1) for u in used), strict=True))
                beyond_idle = used[1] - idle_rate * cpu_for_s
                record["workers_ms_per_update"] = round(1000 * beyond_idle / size, 2)
                record["workers_gc"] = _gc_during(gc_before, fleet.gc_stats())
                if isinstance(clock, StageClock):
                    record["stages"] = clock.summary()
                record["cloud_bytes_per_device"] = round(sent[0] / size)
                after = counters.snapshot()
                record["broker_per_device"] = {name: round((after.get(name, 0) - on_wire.get(name, 0)) / size, 1)
                                               for name in BrokerCounters.TOPICS}  # fmt: skip
                record["cloud_messages_per_device"] = round(sent[1] / size, 2)
                record["up_per_device"] = {kind: [round(n / size, 2), round(b / size)] if b >= 0 else round(n / size, 2)
                                           for kind, (n, b) in sorted(received.items())}  # fmt: skip
                record["cloud_sent_by_kind"] = {kind: {"bytes_per_device": round(b / size), "messages": n}
                                                for kind, (b, n) in sorted(_SENT_BY_KIND.items())}  # fmt: skip
                grown = sum(now - base for now, base in zip(fleet.rss_kb(), fleet.baseline_rss_kb, strict=True))
                record["rss_kb_per_device"] = round(grown / size, 1)
                if done is None:
                    record["states"] = fleet.state_counts()
            fleet_name = cloud.deployer.fleet
        # after the cloud stops: its own ingestion (every message, no share group) would take the windows too
        assert settings.database_url is not None
        rates = {}
        for n, count in enumerate(ingest_workers):
            rates[str(count)] = ingest_rate(settings.database_url, broker.url, fleet_name, ids, count,
                                            ingest_windows, 1_000_000 * (n + 1), timeout_s)  # fmt: skip
        if rates:
            record["ingest_windows_per_s"] = rates
    floor, rollout = record.get("fanout_floor_s"), record.get("rollout_s")
    record["rollout_over_floor"] = round(rollout / floor, 2) if floor and rollout else None
    return record


class GcPauses:
    """The cloud process's garbage collections while started (gc.callbacks): per generation, how many and
    their summed pause in ms, and the objects a full collection still walks (not frozen)."""

    def __init__(self) -> None:
        self.by_generation: dict[int, list[float]] = {}
        self._began = 0.0

    def start(self) -> GcPauses:
        gc.callbacks.append(self._observe)
        return self

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        seen = self.by_generation.setdefault(info["generation"], [0, 0.0])
        seen[0] += 1
        seen[1] += 1000 * (time.perf_counter() - self._began)

    def stop(self) -> dict[str, Any]:
        gc.callbacks.remove(self._observe)
        return {"collections": {str(g): [int(n), round(ms, 1)] for g, (n, ms) in sorted(self.by_generation.items())},
                "frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}  # fmt: skip


def _count_cloud_bytes(cloud: CloudService) -> list[int]:
    """Count what the cloud publishes (desired states, chunks, manifests, trust): [payload bytes, messages],
    and per kind of topic in `_SENT_BY_KIND` ({kind: [bytes, messages]})."""
    sent = [0, 0]
    _SENT_BY_KIND.clear()
    publish = cloud.transport.publish

    def counting(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        sent[0] += len(payload)
        sent[1] += 1
        kind = _SENT_BY_KIND.setdefault(_topic_kind(topic), [0, 0])
        kind[0] += len(payload)
        kind[1] += 1
        if topic.endswith("/desired") and payload:
            _desired_parts(payload)
        publish(topic, payload, qos=qos, retain=retain)

    cloud.transport.publish = counting
    return sent


def _count_cloud_received(cloud: CloudService) -> dict[str, list[int]]:
    """Count what the cloud's ingestion is handed, by channel: {channel: [messages, payload bytes]}, and the
    lifecycle events those messages carry (a batch counts its every event) as {"events_carried": [events, -1]}."""
    received: dict[str, list[int]] = {}
    assert cloud.ingestor is not None
    worker = cloud.ingestor.worker
    submit = worker.submit

    def counting(message: tuple[str, bytes]) -> None:
        topic, payload = message
        kind = received.setdefault(topic.split("/dev/", 1)[-1].partition("/")[2], [0, 0])
        kind[0] += 1
        kind[1] += len(payload)
        if topic.endswith("/" + Channel.EVENTS.value) and payload:
            with contextlib.suppress(Exception):
                carried = 1 + len(getattr(pb.LifecycleEvent.FromString(payload), "batch", ()))  # () before batches
                received.setdefault("events_carried", [0, -1])[0] += carried
        submit(message)

    worker.submit = counting  # type: ignore[method-assign]
    return received


def _gc_during(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The workers' garbage collections between two ProcessFleet.gc_stats(), summed: per generation, how many
    and the seconds they took."""
    out: dict[str, list[Any]] = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}
    for old, new in zip(before, after, strict=True):
        for key in ("collections", "seconds"):
            out[key] = [total + n - o for total, n, o in zip(out[key], new[key], old[key], strict=True)]
    out["seconds"] = [round(s, 3) for s in out["seconds"]]
    return out


def _profile(folder: Path, pids: dict[str, int], rate: int = 100) -> list[Any]:
    """py-spy on each process for the rollout alone (--profile): folded stacks, one file per process."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    import shutil

    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():  # installed elsewhere (a venv of its own) and on PATH
        spy = Path(shutil.which("py-spy") or spy)
    spies = []
    for name, pid in pids.items():
        command = [str(spy), "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--format", "raw",
                   "--output", str(folder / f"{name}.folded")]  # fmt: skip
        spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def _stop_profile(spies: list[Any]) -> None:
    import signal

    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for spy in spies:
        spy.wait(60)


_SENT_BY_KIND: dict[str, list[int]] = {}


def _topic_kind(topic: str) -> str:
    """`desired`, `artifact/data`, `art/manifest`, `art/chunk`, `trust` or `other`."""
    levels = topic.split("/")
    if len(levels) > 3 and levels[3] == "art":
        return "art/manifest" if len(levels) > 4 and levels[4] == "manifest" else "art/chunk"
    if levels[-1] == "trust":
        return "trust"
    if len(levels) > 5 and levels[3] == "dev":
        return "/".join(levels[5:])
    return "other"


def _desired_parts(payload: bytes) -> None:
    """Add a desired state's parts (signed manifest, signed assignment, trust chain, artifact locations)
    to `_SENT_BY_KIND` as `desired.<field>`: what a per-device message is made of."""
    state = pb.DesiredState.FromString(payload)
    for field in ("manifest", "assignment", "trust"):
        if state.HasField(field):
            part = _SENT_BY_KIND.setdefault(f"desired.{field}", [0, 0])
            part[0] += getattr(state, field).ByteSize()
            part[1] += 1
    part = _SENT_BY_KIND.setdefault("desired.artifacts", [0, 0])
    part[0] += sum(location.ByteSize() for location in state.artifacts)
    part[1] += 1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="fleet sizes, comma-separated (default 100,1000)")
    parser.add_argument("--workers", type=int, default=2, help="simulator worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument("--database-url", help="a PostgreSQL server for the cloud (default: SQLite)")
    parser.add_argument("--ingest-workers", default="1,2", help="ingestion worker counts to time (default 1,2)")
    parser.add_argument("--ingest-windows", type=int, default=5000, help="telemetry windows per timing")
    parser.add_argument(
        "--compare-manifests",
        action="store_true",
        help="run each size twice, manifests inside every desired state (as before) then read by digest",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time each update state's first report per device (a subscriber of its own)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the cloud and each worker during the rollout: "
                        "folded stacks in this folder (py-spy in the venv or on PATH)")  # fmt: skip
    parser.add_argument("--state-root", type=Path, help="the simulated devices' state directories in a fresh folder "
                        "here (e.g. /dev/shm: no filesystem journal), not in the run's temporary one")  # fmt: skip
    parser.add_argument("--job-threads", type=int, default=0, help="each worker's update jobs on a thread pool "
                        "this size (default 0: as loop callbacks, simulator.host)")  # fmt: skip
    parser.add_argument("--no-freeze-heap", action="store_true", help="leave the cloud's started heap to the "
                        "garbage collector (`edgefleet up` freezes it: cloud.heap)")  # fmt: skip
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--no-freeze-workers", action="store_true", help="the workers' heap not frozen (gc.freeze, "
                        "simulator.process_fleet): every full collection walks every agent, as before "
                        "2026-12-03")  # fmt: skip
    parser.add_argument("--update-slots", default=str(UPDATE_SLOTS), help="devices per worker taking a desired state "
                        f"in at once (simulator.update_slots; default {UPDATE_SLOTS}, 0: all), comma-separated to "
                        "run each size with each, side by side")  # fmt: skip
    args = parser.parse_args()
    ingest_workers = [int(n) for n in args.ingest_workers.split(",") if n.strip()]
    records = []
    by_digest = (False, True) if args.compare_manifests else (True,)
    slot_counts = [int(n) for n in args.update_slots.split(",") if n.strip()]
    runs = [(int(s), m, n) for s in args.sizes.split(",") if s.strip() for m in by_digest for n in slot_counts]
    for size, manifests, slots in runs:
        with tempfile.TemporaryDirectory(prefix=f"fleet-{size}-") as tmp, contextlib.ExitStack() as stack:
            states = None
            if args.state_root is not None:
                states = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-", dir=args.state_root)))
            record = measure(size, args.workers, args.timeout, Path(tmp), args.database_url, ingest_workers,
                             args.ingest_windows, args.stages, args.profile, manifests, states,
                             args.job_threads, not args.no_freeze_heap, args.profile_rate,
                             not args.no_freeze_workers, slots)  # fmt: skip
        print(json.dumps(record), file=sys.stderr, flush=True)
        records.append(record)
    print(json.dumps({"records": records}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
