# GPU classes: what the pool offers (machine, accelerator, disk, Spot or standard, zones, price,
# limits), and the regions, templates and subnets they need. Inputs and plain values only, no
# resource: tests/test_deploy_gpu_classes.py evaluates this file with variables.tf offline.
# Cross-variable validation needs Terraform >= 1.9 (versions.tf).

variable "gpu_classes" {
  type = map(object({
    machine_type = string
    # Descriptive for machine types that bring their GPUs (g2, a2, a3, ...); attached to the
    # VM only for n1 machine types, the one family GPUs are added to (compute.tf).
    accelerator_type  = optional(string, "")
    accelerator_count = optional(number, 0)
    disk_size_gb      = optional(number, 200)
    disk_type         = optional(string, "pd-balanced")
    spot              = optional(bool, false)
    zones             = list(string)
    price_per_hour    = number
    max_vms           = optional(number, 8)
    max_vms_per_zone  = optional(number, 4)
    # Windows with VMs kept running and idle (functions/comfyburst/domain/warm.py): on `days`
    # (mon-fri, sat,sun, daily), from `from` to `to` (HH:MM local time in time_zone; `to` not
    # after `from`: overnight), `vms` of this class stay up.
    warm = optional(list(object({
      days      = string
      from      = string
      to        = string
      time_zone = optional(string, "UTC")
      vms       = number
    })), [])
  }))
  description = "GPU classes by name: machine_type, accelerator_type/_count, disk_size_gb, disk_type, spot, zones (any regions, most preferred first), price_per_hour (USD per VM hour, for receipts), max_vms, max_vms_per_zone, warm (a schedule of VMs kept running and idle: [{days, from, to, time_zone, vms}]). null: one class \"default\" from the gpu_* variables."
  default     = null

  validation {
    condition     = var.gpu_classes == null ? true : length(var.gpu_classes) > 0
    error_message = "gpu_classes must declare at least one class (or be null for the gpu_* variables)."
  }

  validation {
    # The same pattern as GPU_CLASS_NAME_PATTERN (functions/comfyburst/schema.py): a label value
    # and part of VM and template names.
    condition = alltrue([
      for name in keys(var.gpu_classes == null ? {} : var.gpu_classes) :
      can(regex("^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$", name))
    ])
    error_message = "gpu_classes names must be 1-32 characters: lowercase letters, digits and hyphens, starting with a letter."
  }

  validation {
    condition = alltrue(flatten([
      for c in values(var.gpu_classes == null ? {} : var.gpu_classes) : concat(
        [length(c.zones) > 0, length(distinct(c.zones)) == length(c.zones)],
        [for zone in c.zones : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", zone))],
      )
    ]))
    error_message = "Every gpu_classes entry needs zones, each once, each a zone name such as \"us-central1-a\"."
  }

  validation {
    condition = alltrue(flatten([
      for c in values(var.gpu_classes == null ? {} : var.gpu_classes) : [
        for n in [c.accelerator_count, c.max_vms, c.max_vms_per_zone] : n >= 0 && floor(n) == n
      ]
    ]))
    error_message = "accelerator_count, max_vms and max_vms_per_zone must be whole numbers >= 0."
  }

  validation {
    condition = alltrue([
      for c in values(var.gpu_classes == null ? {} : var.gpu_classes) :
      c.price_per_hour >= 0 && floor(c.disk_size_gb) == c.disk_size_gb
    ])
    error_message = "price_per_hour must be >= 0 and disk_size_gb a whole number."
  }

  validation {
    # A template whose disk is smaller than its image makes every create fail (Compute: "Requested
    # disk size cannot be smaller than the image size"), and the class's jobs would wait forever.
    condition = alltrue([
      for c in values(var.gpu_classes == null ? {} : var.gpu_classes) :
      c.disk_size_gb >= var.gpu_image_disk_size_gb
    ])
    error_message = "Every gpu_classes disk_size_gb must be at least the baked image's size (gpu_image_disk_size_gb = ${var.gpu_image_disk_size_gb} GB, gpu_image/ disk_size_gb): Compute refuses a boot disk smaller than its image."
  }

  validation {
    condition = alltrue([
      for c in values(var.gpu_classes == null ? {} : var.gpu_classes) :
      c.accelerator_count == 0 || c.accelerator_type != ""
    ])
    error_message = "A class with accelerator_count > 0 needs its accelerator_type."
  }

  validation {
    # The rules of WarmWindow (functions/comfyburst/domain/warm.py); an unknown time zone name
    # passes here and stops the functions at load with its name.
    condition = alltrue(flatten([
      for c in values(var.gpu_classes == null ? {} : var.gpu_classes) : [
        for w in c.warm : alltrue([
          can(regex("^(daily|weekdays|weekends|(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?(,(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)*)$", w.days)),
          can(regex("^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", w.from)),
          can(regex("^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", w.to)),
          w.from != w.to,
          can(regex("^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$", w.time_zone)),
          w.vms >= 1 && floor(w.vms) == w.vms && w.vms <= c.max_vms,
        ])
      ]
    ]))
    error_message = "Every gpu_classes warm window needs days (mon-fri, sat,sun, daily; lowercase), from and to as HH:MM (00:00-24:00, not equal), an IANA time_zone, and vms a whole number from 1 to the class's max_vms."
  }
}

variable "default_gpu_class" {
  type        = string
  description = "Class of jobs that ask for none; null: the only class (required when there are several)."
  default     = null

  validation {
    condition = (
      var.default_gpu_class != null
      ? contains(keys(local.gpu_classes), var.default_gpu_class)
      : length(local.gpu_classes) == 1
    )
    error_message = "default_gpu_class must name one of gpu_classes, and must be set when there are several."
  }
}

variable "preemption_fallback_class" {
  type        = string
  description = "Standard (non-Spot) class a job moves to once Spot preemptions reach their cap; null: none."
  default     = null

  validation {
    condition = (
      var.preemption_fallback_class == null
      ? true
      : try(!local.gpu_classes[var.preemption_fallback_class].spot, false)
    )
    error_message = "preemption_fallback_class must name a class of gpu_classes with spot = false."
  }
}

variable "gpu_price_per_hour" {
  type        = number
  description = "USD per VM hour of the class derived from the gpu_* variables, for receipts (docs/DEPLOY.md: where to read it); 0 until set."
  default     = 0

  validation {
    condition     = var.gpu_price_per_hour >= 0
    error_message = "gpu_price_per_hour must be >= 0."
  }
}

variable "subnet_cidrs" {
  type        = map(string)
  description = "CIDR of the pool's subnet in each region other than var.region (which uses subnet_cidr) that a class has zones in."
  default     = {}

  validation {
    condition     = alltrue([for cidr in values(var.subnet_cidrs) : can(cidrnetmask(cidr))])
    error_message = "subnet_cidrs values must be IPv4 CIDR ranges such as \"10.80.1.0/24\"."
  }

  validation {
    condition = alltrue([
      for region in local.pool_regions : region == var.region || contains(keys(var.subnet_cidrs), region)
    ])
    error_message = "subnet_cidrs needs a CIDR for every region other than var.region that gpu_classes has zones in."
  }

  validation {
    condition = alltrue([
      !contains(keys(var.subnet_cidrs), var.region),
      length(distinct(concat([var.subnet_cidr], values(var.subnet_cidrs)))) == length(var.subnet_cidrs) + 1,
    ])
    error_message = "subnet_cidrs must not name var.region (subnet_cidr is its CIDR) nor repeat a CIDR."
  }
}

locals {
  # The class of a deployment that declares none: exactly the single-pool variables.
  gpu_classes = var.gpu_classes != null ? var.gpu_classes : {
    default = {
      machine_type      = var.gpu_machine_type
      accelerator_type  = var.gpu_accelerator_type
      accelerator_count = var.gpu_accelerator_count
      disk_size_gb      = var.gpu_boot_disk_size_gb
      disk_type         = var.gpu_boot_disk_type
      spot              = var.gpu_spot
      zones             = var.gpu_zones
      price_per_hour    = var.gpu_price_per_hour
      max_vms           = var.gpu_max_vms
      max_vms_per_zone  = var.gpu_max_vms_per_zone
      warm              = []
    }
  }

  default_gpu_class = coalesce(var.default_gpu_class, keys(local.gpu_classes)[0])

  # A zone's region is its name without the trailing "-<letter>".
  gpu_class_regions = {
    for name, c in local.gpu_classes :
    name => sort(distinct([for zone in c.zones : regex("^(.+)-[a-z]$", zone)[0]]))
  }

  # One template per (class, region its zones are in), keyed "class/region".
  gpu_templates = merge([
    for name, c in local.gpu_classes : {
      for region in local.gpu_class_regions[name] :
      "${name}/${region}" => merge(c, { class = name, region = region })
    }
  ]...)

  # The image build's VM (Packer, deploy/bake.sh; output image_builder): the default class's
  # machine type and GPU in that class's first zone, so a project needs quota only for the GPUs
  # it runs. As in compute.tf, a GPU is attached to n1 machine types only; the others bring
  # theirs ("none").
  image_builder_class = local.gpu_classes[local.default_gpu_class]
  image_builder_gpu   = startswith(local.image_builder_class.machine_type, "n1-") && local.image_builder_class.accelerator_count > 0
  image_builder = {
    machine_type      = local.image_builder_class.machine_type
    accelerator_type  = local.image_builder_gpu ? local.image_builder_class.accelerator_type : "none"
    accelerator_count = local.image_builder_gpu ? local.image_builder_class.accelerator_count : 0
    zone              = local.image_builder_class.zones[0]
    region            = regex("^(.+)-[a-z]$", local.image_builder_class.zones[0])[0]
  }

  # var.region always has a subnet: the image build's VM runs there.
  pool_regions = distinct(concat([var.region], sort(distinct(flatten(values(local.gpu_class_regions))))))
  pool_subnet_cidrs = {
    for region in local.pool_regions :
    region => region == var.region ? var.subnet_cidr : lookup(var.subnet_cidrs, region, "")
  }

  # COMFYBURST_GPU_CLASSES entries without their templates (compute.tf adds those): the
  # fields of GpuClass in functions/comfyburst/domain/gpu_classes.py.
  gpu_class_specs = [
    for name, c in local.gpu_classes : {
      name              = name
      machine_type      = c.machine_type
      accelerator_type  = c.accelerator_type
      accelerator_count = c.accelerator_count
      disk_gb           = c.disk_size_gb
      spot              = c.spot
      zones             = c.zones
      price_per_hour    = c.price_per_hour
      max_vms           = c.max_vms
      max_vms_per_zone  = c.max_vms_per_zone
      warm              = c.warm
    }
  ]
}
