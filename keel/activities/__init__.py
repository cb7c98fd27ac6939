"""All I/O: model providers, the agent-node activity, tools and notifications."""

from keel.activities.agent_node import AgentNodeActivities
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY

__all__ = ["AGENT_NODE_ACTIVITY", "AgentNodeActivities"]
