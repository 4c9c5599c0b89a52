/* tests/cl-shim.h — what the preloaded OpenCL shims (cl-fail.c,
 * cl-props.c, cl-count.c) share: finding the ICD loader's own function that
 * a shim stands in front of. */
#ifndef KILN_TESTS_CL_SHIM_H
#define KILN_TESTS_CL_SHIM_H

#include <dlfcn.h>

#define SHIM_API __attribute__((visibility("default")))

/* The ICD loader's `name`. It is loaded after the shim, and by a plugin
 * opened with RTLD_LOCAL, so RTLD_NEXT may not see it: then ask it by name. */
static inline void *cl_shim_real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        void *icd = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (icd) {
            f = dlsym(icd, name);
            dlclose(icd);
        }
    }
    return f;
}

#endif /* KILN_TESTS_CL_SHIM_H */
