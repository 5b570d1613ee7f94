// The dashboard: everything lives in the Dashboard library; this file only starts it.
import Dashboard

await Dashboard.main()
