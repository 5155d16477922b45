#!/usr/bin/env python3
"""How long /health takes while heavy queries run (docs/benchmarks.md).

Loads N entities of type Sensor into a running Wuyang (batch upsert), then,
for each heavy query, runs LOADERS keep-alive clients that repeat it while
one client asks /health 200 times (10 ms apart), and prints the /health
latency percentiles beside the idle ones.

    python3 scripts/health-under-load.py 127.0.0.1:1026 20000 4
"""
import http.client
import json
import statistics
import sys
import threading
import time

HOST, PORT = sys.argv[1].split(":")
PORT = int(PORT)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
LOADERS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
OBSERVED = "2024-03-01T08:00:00Z"
HEAVY = {
    "scan (q pattern, count, 20,000 decoded)": "/ngsi-ld/v1/entities?type=Sensor&count=true&limit=0&q=isPartOf~=.*5.*",
    "page of 1,000 entities": "/ngsi-ld/v1/entities?type=Sensor&limit=1000",
}


def sensor(i):
    prop = lambda v, unit: {"type": "Property", "value": v, "observedAt": OBSERVED, "unitCode": unit}
    return {
        "id": f"urn:ngsi-ld:Sensor:{i}",
        "type": "Sensor",
        "aProperty": prop(float(i % 100), "CEL"),
        "anotherProperty": prop(i % 50, "C62"),
        "temperature": [
            dict(prop(20.5, "CEL"), datasetId="urn:ngsi-ld:Dataset:sensorA"),
            dict(prop(21.0, "CEL"), datasetId="urn:ngsi-ld:Dataset:sensorB"),
        ],
        "pressure": dict(prop(1013.2, "A97"), accuracy={"type": "Property", "value": 0.5}),
        "isPartOf": {"type": "Relationship", "object": f"urn:ngsi-ld:Group:{i % 100}"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [113.25 + (i % 1000) * 0.0002, 23.08 + (i // 1000) * 0.0002]}},
    }


def load():
    c = http.client.HTTPConnection(HOST, PORT)
    for start in range(0, N, 1000):
        body = json.dumps([sensor(i) for i in range(start, min(N, start + 1000))])
        c.request("POST", "/ngsi-ld/v1/entityOperations/upsert", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status in (201, 204), r.status


def health_latencies():
    c = http.client.HTTPConnection(HOST, PORT)
    out = []
    for _ in range(200):
        t = time.perf_counter()
        c.request("GET", "/health")
        c.getresponse().read()
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    out.sort()
    return out


def report(name, lat, extra=""):
    print(f"{name:42} /health p50 {lat[100]:7.2f} ms  p95 {lat[190]:7.2f}  p99 {lat[198]:7.2f}  max {lat[-1]:7.2f}{extra}")


def under(path):
    stop = threading.Event()
    times = []

    def repeat():
        c = http.client.HTTPConnection(HOST, PORT)
        while not stop.is_set():
            t = time.perf_counter()
            c.request("GET", path)
            c.getresponse().read()
            times.append(time.perf_counter() - t)

    threads = [threading.Thread(target=repeat) for _ in range(LOADERS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    lat = health_latencies()
    stop.set()
    for t in threads:
        t.join()
    return lat, f"  (heavy query mean {statistics.mean(times) * 1000:.1f} ms)"


load()
for path in HEAVY.values():  # builds the value indexes, warms the caches
    c = http.client.HTTPConnection(HOST, PORT)
    c.request("GET", path)
    c.getresponse().read()
report("idle", health_latencies())
for name, path in HEAVY.items():
    lat, extra = under(path)
    report(f"{LOADERS} clients: {name}", lat, extra)
