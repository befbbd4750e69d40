"""Who is who: device and cloud identities on the broker, and what each may publish and read.

passwords.py       broker credentials: random secrets, stored only as Mosquitto-compatible hashes
acl.py             the access rules (a device: its own upward topics out, its own downward topics and
                   the fleet's trust topic in; the cloud: the whole fleet), as data, rendered for
                   Mosquitto and enforced by the embedded broker
ca.py              the fleet's certificate authority and the broker's server certificate
broker_config.py   `edgefleet broker-config`: everything a production Mosquitto needs, in one folder
enrollment.py      single-use enrollment tokens -> a device's credentials and row (the only way in);
                   `enroll_device` is the in-process shortcut for development and tests
redemption.py      one redemption as the console API performs it, with its audit rows
"""
