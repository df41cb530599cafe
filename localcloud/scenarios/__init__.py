"""Scenarios run on the local cloud: the narrated demo, the chaos run, and the harness they and
the end-to-end tests share (a configured cloud, warm-up, an observer of jobs and VMs). The
runner they drive (emulators, stand-ins, the functions) is the rest of `localcloud`."""
