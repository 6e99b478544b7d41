-- Argo CD health check for Kultivar Deployments (kultivar.io/v1alpha1), shipped with the Kultivar chart.
-- Install: argocd-cm key resource.customizations.health.kultivar.io_Deployment (see the chart's README section
-- "Argo CD"). Plain Lua 5.1 with Argo CD's default libraries: no string library is used.
--   Healthy      Ready=True and the operator has observed the current generation
--   Progressing  not reconciled yet, or Ready=False with a reason that means "working on it"
--   Degraded     also whenever the Degraded condition is True (a canary was rolled back)
--   Suspended    a canary the user paused (spec.strategy.canary.paused): it waits for them
--   Degraded     Ready=False with any other reason: a failure that needs a fix (the message says which)
local hs = {}

-- Ready=False reasons that mean work in progress; every other Ready=False reason is a failure.
-- Generated from kultivar.domain.reasons by `make manifests`: do not edit this table.
local progressing = {
  Deploying = true,
  Replacing = true,
  CanaryStarting = true,
  CanaryStepping = true,
  CanaryPaused = true,
  CanaryPromoting = true,
}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Kultivar operator to reconcile this Deployment"
  return hs
end
local ready = condition(status.conditions, "Ready")
local observed = status.observedGeneration
if ready ~= nil and ready.observedGeneration ~= nil then
  observed = ready.observedGeneration
end
if ready == nil or observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Kultivar operator to observe generation " .. tostring(generation)
  return hs
end
local message = ready.reason
if ready.message ~= nil and ready.message ~= "" then
  message = ready.reason .. ": " .. ready.message
end

-- The Deployment's own conditions: Degraded=True after a rollback, Progressing=True during a rollout.
local degraded = condition(status.conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.reason .. ": " .. (degraded.message or "")
  return hs
end
local rollout = condition(status.conditions, "Progressing")
if rollout ~= nil and rollout.status == "True" and rollout.reason == "CanaryPausedByUser" then
  hs.status = "Suspended"
  hs.message = rollout.reason .. ": " .. (rollout.message or "")
  return hs
end
if ready.status == "True" then
  if rollout ~= nil and rollout.status == "True" then
    hs.status = "Progressing"
    hs.message = rollout.reason .. ": " .. (rollout.message or "")
  else
    hs.status = "Healthy"
    hs.message = message
  end
  return hs
end
if progressing[ready.reason] or (rollout ~= nil and rollout.status == "True" and progressing[rollout.reason]) then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = message
return hs
