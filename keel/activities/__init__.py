"""All I/O: model providers, the agent-node activity, tools and notifications."""

from keel.activities.agent_node import AGENT_NODE_ACTIVITY, AgentNodeActivities

__all__ = ["AGENT_NODE_ACTIVITY", "AgentNodeActivities"]
