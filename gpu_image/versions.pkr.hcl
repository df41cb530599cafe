# Packer 1.11 or later with the googlecompute plugin at exactly this version (`packer init .`
# installs it). The offline checks (tests/test_deploy_tools.py) validate the template with
# Debian's Packer 1.6.6 on a copy without this block, which 1.6.6 does not know, and check the
# source block's arguments against this plugin version's own spec
# (tests/deploy/packer_googlecompute_schema.json); docs/DEPLOY.md says why.
packer {
  required_version = ">= 1.11.0"

  required_plugins {
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = "= 1.2.7"
    }
  }
}
