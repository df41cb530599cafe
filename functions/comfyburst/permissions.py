"""The compute permissions ComputeFleet uses: the dispatcher's custom IAM role holds exactly these.

terraform/iam.tf grants them through one custom role to the API and the reaper;
tests/test_deploy_wiring.py fails when the two lists drift apart.
"""

COMPUTE_PERMISSIONS: tuple[str, ...] = (
    "compute.instances.get",  # read a VM's status, metadata fingerprint and labels
    "compute.instances.list",  # find the pool by its label in every zone
    "compute.instances.setMetadata",  # hand a stopped VM its job id and deployment config
    "compute.instances.start",  # start a leased VM for a job
    "compute.instances.stop",  # stop an idle, orphaned or timed-out VM
    "compute.zoneOperations.get",  # read a start/stop operation's outcome (stockout, quota)
    # Creating pool VMs from the instance template (instances.insert) and deleting idle ones.
    "compute.instances.create",
    "compute.instances.delete",
    "compute.instanceTemplates.useReadOnly",  # create from the pool's template
    "compute.disks.create",  # the VM's boot disk (the template's)
    "compute.images.useReadOnly",  # the GPU image the boot disk is made from
    "compute.subnetworks.use",  # the template's network interface
    "compute.instances.setLabels",  # the pool label (the template's and the dispatcher's)
    "compute.instances.setServiceAccount",  # the template runs VMs as the worker account
    "compute.instances.setTags",  # the template's network tag (firewall rules)
)

# Not in the custom role: granted as roles/iam.serviceAccountUser on the worker's service
# account only, because starting or re-configuring a VM that runs as that account needs it.
WORKER_SA_PERMISSIONS: tuple[str, ...] = ("iam.serviceAccounts.actAs",)
