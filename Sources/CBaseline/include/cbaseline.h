#pragma once
int cbaseline_version(void);
