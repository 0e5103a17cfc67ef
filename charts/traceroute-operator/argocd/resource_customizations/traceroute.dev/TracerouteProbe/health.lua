-- Argo CD health check for traceroute.dev/TracerouteProbe, in kstatus order:
--   Progressing  being deleted; or the operator has not acted on the current generation
--                (status.observedGeneration != metadata.generation; the CRD defaults it
--                to 0, so a probe the operator never saw is Progressing); or Reconciling=True
--   Degraded     Stalled=True (the operator cannot go on without a spec change)
--   Progressing  Ready is not True
--   Suspended    Ready, and spec.suspend is true (no runs are scheduled)
--   Healthy      Ready=True for the current generation
-- A target that is unreachable is what the probe measures, not a fault of the resource:
-- it is reported in the message, the health stays Healthy.
-- Install: argocd-cm, key resource.customizations.health.traceroute.dev_TracerouteProbe.
-- health_test.yaml and testdata/ next to this file are its cases, in Argo CD's layout
-- (resource_customizations/<group>/<kind>/); the chart's tests run them.
local hs = {}

local function condition(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted (the operator removes the probe's metrics first)"
  return hs
end

local generation = obj.metadata.generation
-- the operator has written no status yet: none at all (a CRD without the status default),
-- or only the CRD's default (observedGeneration 0, no conditions)
if obj.status == nil or (obj.status.observedGeneration == 0 and obj.status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the probe"
  return hs
end

local conditions = obj.status.conditions

local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling, "Reconciling")
  return hs
end

local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "The operator stalled on this probe")
  return hs
end

local ready = condition(conditions, "Ready")
if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = text(ready, "Waiting for the probe to become Ready")
  return hs
end

local message = text(ready, "Ready")
if obj.status.reached ~= nil and obj.status.reached ~= "" then
  message = message .. " (targets reached in the last run: " .. obj.status.reached .. ")"
end
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Runs are suspended (spec.suspend). " .. message
  return hs
end
hs.status = "Healthy"
hs.message = message
return hs
