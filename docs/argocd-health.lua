-- Argo CD resource health check for apikeys.dev/ApiKey (Lua 5.1, as Argo CD runs it).
-- Install it under resource.customizations.health.apikeys.dev_ApiKey in argocd-cm
-- (see docs/gitops.md). It reads only status conditions, never key material.
--   Healthy:     Ready=True and status.observedGeneration == metadata.generation
--   Degraded:    Stalled=True, or Ready=False for a reason that needs a human
--   Progressing: anything else (not yet reconciled, rotating, store briefly unavailable)
local hs = {}

local needsAHuman = {
  SecretConflict = true,
  StoreConflict = true,
  PolicyNotAllowed = true,
  RotationFailed = true,
}

local function findCondition(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  local text = condition.reason or condition.type
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the ApiKey"
  return hs
end

local conditions = obj.status.conditions
local stalled = findCondition(conditions, "Stalled")
local ready = findCondition(conditions, "Ready")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if ready ~= nil and ready.status == "False" and needsAHuman[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
local current = generation == nil or (observed ~= nil and observed == generation)

if ready ~= nil and ready.status == "True" and current then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if not current then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
elseif ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
