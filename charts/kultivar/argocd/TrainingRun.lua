-- Argo CD health check for Kultivar TrainingRuns (kultivar.io/v1alpha1), shipped with the Kultivar chart.
-- Install: argocd-cm key resource.customizations.health.kultivar.io_TrainingRun (see the chart's README section
-- "Argo CD"). Plain Lua 5.1 with Argo CD's default libraries: no string library is used.
--   Healthy      Ready=True and the operator has observed the current generation
--   Progressing  not reconciled yet, or Ready=False with a reason that means "working on it"
--   Degraded     Ready=False with any other reason: a failure that needs a fix (the message says which)
local hs = {}

-- Ready=False reasons that mean work in progress; every other Ready=False reason is a failure.
-- Generated from kultivar.domain.reasons by `make manifests`: do not edit this table.
local progressing = {
  Pending = true,
  Training = true,
  Registering = true,
  WaitingForDataset = true,
  WaitingForHoldout = true,
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
  hs.message = "Waiting for the Kultivar operator to reconcile this TrainingRun"
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

if ready.status == "True" then
  hs.status = "Healthy"
elseif progressing[ready.reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = message
return hs
