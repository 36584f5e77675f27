-- Argo CD health check for modeldeploy.dev/v1alpha1 ModelDeployment (Lua 5.1, as Argo CD's gopher-lua).
-- Install it under the key resource.customizations.health.modeldeploy.dev_ModelDeployment of the
-- argocd-cm ConfigMap (docs/gitops.md). Tested against real objects by tests/cluster/test_gitops_health.py.
--
--   Healthy      Ready: the spec's revision serves all traffic
--   Progressing  not observed yet, a revision rolling out, a canary walking its steps, pods starting
--   Suspended    a canary held by spec.rollout.paused
--   Degraded     Stalled (rolled back, a spec the operator cannot use: a person must change it), or
--                Degraded for another reason (a pod that cannot start, a missing Secret, a refused child)
local hs = {}

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

local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report status"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local stalled = condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
  return hs
end

local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

if status.canary ~= nil and status.canary.paused == true then
  hs.status = "Suspended"
  local progressing = condition(status.conditions, "Progressing")
  hs.message = progressing ~= nil and progressing.message or "canary paused by spec.rollout.paused"
  return hs
end

local degraded = condition(status.conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = said(degraded)
  return hs
end

hs.status = "Progressing"
local reconciling = condition(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = said(reconciling)
elseif ready ~= nil then
  hs.message = said(ready)
else
  hs.message = "waiting for the operator"
end
return hs
