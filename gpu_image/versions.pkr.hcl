# Packer 1.6.6 (Debian's package, used for the offline checks) rejects `required_plugins`, a
# Packer 1.7+ block, so only the core version is constrained here. The googlecompute builder is
# built into 1.6.6; newer Packer releases (Cloud Build) install it with
# `packer plugins install github.com/hashicorp/googlecompute` before `packer build`.
packer {
  required_version = ">= 1.6.6"
}
