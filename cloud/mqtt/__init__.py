"""The cloud's side of MQTT: the embedded broker (`broker`, with amqtt's defects patched in
`amqtt_fixes`, its identities and ACL decided by `broker_auth` through the amqtt plugins in
`auth_plugins`), the router that subscribes to device channels and hands each message to its consumer
(`router`), the queue-plus-thread that takes messages off the transport's thread (`worker`), and which
of several cloud processes answers a device's chunk requests when all of them hear it (`ownership`).

Nothing is re-exported here: the broker pulls in amqtt, which the router and worker do not need.
"""
