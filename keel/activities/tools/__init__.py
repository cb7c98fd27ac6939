"""Tool activities (``keel.tool.<name>``) over local fakes of the systems they touch."""

from keel.activities.tools.fake_systems import (
    DeployConflictError,
    IncidentWorld,
    UnknownDeployError,
    UnknownServiceError,
    WorldError,
)
from keel.activities.tools.incident import (
    INCIDENT_TOOLS,
    IncidentTools,
    incident_tool_activities,
)

__all__ = [
    "INCIDENT_TOOLS",
    "DeployConflictError",
    "IncidentTools",
    "IncidentWorld",
    "UnknownDeployError",
    "UnknownServiceError",
    "WorldError",
    "incident_tool_activities",
]
